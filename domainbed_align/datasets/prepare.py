"""Prepare DomainBed's image datasets in its layout, and fetch ImageNet backbone weights.

    python -m domainbed_align.datasets.prepare --dataset VLCS --data_dir D
    python -m domainbed_align.datasets.prepare --dataset PACS --data_dir D [--archive PACS.zip]
    python -m domainbed_align.datasets.prepare --dataset OfficeHome --data_dir D
    python -m domainbed_align.datasets.prepare --dataset DomainNet --data_dir D \\
        [--archive clipart.zip ... --archive sketch.zip --archive domain_net_duplicates.txt]
    python -m domainbed_align.datasets.prepare --dataset TerraIncognita --data_dir D \\
        [--archive eccv_18_all_images_sm.tar.gz --archive caltech_camera_traps.json.zip]
    python -m domainbed_align.datasets.prepare --weights resnet50 [--weights resnet18] [--out DIR]
    python -m domainbed_align.datasets.prepare --dataset TerraIncognita --from_dir D \\
        --data_dir D256 --resize 256      (a pre-resized copy for fast loading; datasets/resize.py)

Each source archive is taken from --archive or downloaded (resumably) into
`<data_dir>/.downloads/`, hashed (sha256 printed, and checked where known), then the dataset is
built in `<data_dir>/.<folder>.partial`, checked (domain and class folders, image counts) and
renamed to `<data_dir>/<folder>` only when complete. A killed or failed run never leaves a
folder that looks complete; the same command again resumes the download and rebuilds.
Errors are one `error: ...` line and exit 2 (an interrupt exits 130). Archives are read by
`archives.py`; each dataset's folders are built by its function in `builders.py`.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from domainbed_align.datasets.archives import first_file
from domainbed_align.datasets.builders import BUILDERS
from domainbed_align.datasets.check import (Layout, Report, compare_counts, get_layout, is_image,
                                            parse_expected, scan_layout)
from domainbed_align.datasets.download import download, sha256_file
from domainbed_align.lib.errors import ConfigError, DataError, DomainBedAlignError
from domainbed_align.lib.locks import FileLock
from domainbed_align.lib.misc import atomic_write_text


@dataclass(frozen=True)
class Source:
    """One archive a dataset is built from. `sha256`/`size` are None where not established."""

    url: str
    filename: str
    holds: str                  # "images", "annotations" or "list": how an unnamed --archive is told apart
    sha256: Optional[str] = None
    size: Optional[int] = None
    domain: Optional[str] = None  # the one domain folder an archive of a multi-archive dataset holds


LILA = "https://storage.googleapis.com/public-datasets-lila/caltechcameratraps"
DOMAINNET = "http://csr.bu.edu/ftp/visda/2019/multi-source"


def _gdrive(file_id: str) -> str:
    return (f"https://drive.usercontent.google.com/download?id={file_id}&export=download"
            f"&confirm=t")


SOURCES: Dict[str, Dict[str, Source]] = {
    # upstream DomainBed's download.py: gdown of Google Drive file 1skwblH1_okBwxWxmRsp9_qi15hyPpxg8
    "VLCS": {"archive": Source(
        "https://drive.usercontent.google.com/download?id=1skwblH1_okBwxWxmRsp9_qi15hyPpxg8"
        "&export=download&confirm=t", "VLCS.tar.gz", "images")},
    # Caltech Camera Traps on LILA, as upstream's download.py: the ECCV'18 images and the full
    # CCT annotation file (caltech_images_20210113.json inside; ECCV'18's own
    # eccv_18_annotations.tar.gz works with --archive too). The small annotations go first: a
    # dead link shows before 6.5 GB are fetched.
    "TerraIncognita": {
        "annotations": Source(f"{LILA}/labels/caltech_camera_traps.json.zip",
                              "caltech_camera_traps.json.zip", "annotations"),
        "images": Source(f"{LILA}/eccv_18_all_images_sm.tar.gz", "eccv_18_all_images_sm.tar.gz",
                         "images", size=6_492_615_601),
    },
    # upstream's download.py: Google Drive files (PACS.zip holds kfold/<domain>/<class>/,
    # office_home.zip holds OfficeHomeDataset_10072016/<Domain>/<class>/)
    "PACS": {"archive": Source(_gdrive("1JFr8f805nMUelQWWmfnJR3y4_SYoN5Pd"), "PACS.zip", "images")},
    "OfficeHome": {"archive": Source(_gdrive("1uY0pj7oFsjMxRwaD3Sxy0jgel0fsYXLC"),
                                     "office_home.zip", "images")},
    # upstream's download.py: one zip per domain from the DomainNet site (the cleaned clipart
    # and painting under groundtruth/), then the files of upstream's duplicate list are deleted.
    # The small list goes first: a dead link shows before 20 GB are fetched.
    "DomainNet": {
        "duplicates": Source("https://raw.githubusercontent.com/facebookresearch/DomainBed/main/"
                             "domainbed/misc/domain_net_duplicates.txt",
                             "domain_net_duplicates.txt", "list"),
        **{d: Source(f"{DOMAINNET}/{'groundtruth/' if d in ('clipart', 'painting') else ''}{d}.zip",
                     f"{d}.zip", "images", domain=d)
           for d in ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")},
    },
}
MANIFEST = ".prepare.json"


# -- the prepare command -------------------------------------------------------------------------

def _named(values: List[str], sources: Dict[str, Source], flag: str, dataset: str,
           allow_unnamed: bool = False) -> Tuple[Dict[str, str], List[str]]:
    """`[NAME=]VALUE` options -> ({name: value}, unnamed values)."""
    named: Dict[str, str] = {}
    unnamed: List[str] = []
    for v in values:
        name, sep, rest = v.partition("=")
        if sep and name in sources:
            key, value = name, rest
        elif len(sources) == 1:
            key, value = next(iter(sources)), v
        elif allow_unnamed:
            unnamed.append(v)
            continue
        else:
            raise ConfigError(f"{flag} {v!r}: {dataset} has several sources "
                              f"({', '.join(sources)}); write {flag} NAME=VALUE")
        if key in named:
            raise ConfigError(f"{flag} given twice for {dataset}'s {key}")
        named[key] = value
    return named, unnamed


def _resolve_archives(dataset: str, values: List[str]) -> Dict[str, str]:
    sources = SOURCES[dataset]
    named, unnamed = _named(values, sources, "--archive", dataset, allow_unnamed=True)
    for path in unnamed:  # tell them apart by their first file (a list by its name)
        is_list = path.lower().endswith(".txt")
        first = first_file(path) if os.path.isfile(path) and not is_list else ""
        holds = "list" if is_list else "annotations" if first.lower().endswith(".json") else \
            "images" if is_image(first) else None
        parts = first.split("/")
        key = next((k for k, s in sources.items() if s.holds == holds
                    and (s.domain is None or s.domain in parts[:-1])), None)
        if key is None or key in named:
            raise ConfigError(f"cannot tell which of {dataset}'s sources --archive {path} is "
                              f"(first file: {first or 'none'}); write --archive NAME=PATH with "
                              f"NAME in {', '.join(sources)}")
        named[key] = path
    for key, path in named.items():
        if not os.path.isfile(path):
            raise DataError(f"--archive {path} does not exist or is not a file")
    return named


def _check_writable(data_dir: str) -> None:
    try:
        os.makedirs(data_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=data_dir, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DataError(f"cannot write to --data_dir {data_dir} ({e.strerror or e}); pick a "
                        f"folder you can write to") from None


def _lock(path: str) -> FileLock:
    """Held while building; removed on the way out, whatever the outcome (no `.lock` left)."""
    return FileLock(path, advice="another prepare is running on this folder: wait for it to "
                                 "finish").acquire()


def _final_check(folder: str, layout: Layout, expected: Optional[dict]) -> Report:
    report = Report(folder)
    scan_layout(folder, layout, report)
    if report.counts:
        compare_counts(report, layout, expected)
    return report


def _preparable(dataset: str) -> None:
    if dataset not in SOURCES:
        hint = ("; DomainFolder reads a tree you already have: check it with `python -m "
                "domainbed_align.datasets.check --dataset DomainFolder --data_dir TREE`"
                if dataset == "DomainFolder" else "")
        raise ConfigError(f"prepare knows {', '.join(SOURCES)}, not {dataset!r}{hint}")


def prepare_dataset(dataset: str, data_dir: str, archives: Sequence[str] = (),
                    urls: Sequence[str] = (), sha256s: Sequence[str] = (),
                    expected: Optional[dict] = None, keep_downloads: bool = False,
                    timeout: float = 30.0) -> str:
    """Build `<data_dir>/<folder>`; returns its path. Raises DomainBedAlignError subclasses."""
    _preparable(dataset)
    layout = get_layout(dataset)
    sources = SOURCES[dataset]
    url_of, _ = _named(list(urls), sources, "--url", dataset)
    sha_of, _ = _named(list(sha256s), sources, "--sha256", dataset)
    for key, digest in sha_of.items():
        if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise ConfigError(f"--sha256 {key}={digest!r} is not a 64-digit hex sha256")
    given = _resolve_archives(dataset, list(archives))
    both = sorted(set(given) & set(url_of))
    if both:
        raise ConfigError(f"{dataset}'s {both[0]} is given by --archive and by --url; keep one")
    data_dir = os.path.abspath(data_dir)
    _check_writable(data_dir)
    target = os.path.join(data_dir, layout.folder)
    lock = _lock(os.path.join(data_dir, f".{layout.folder}.lock"))
    try:
        if os.path.exists(target):
            report = _final_check(target, layout, expected)
            if not report.ok:
                kind, detail = report.problems[0]
                raise DataError(f"{target} already exists but fails the check ({kind}: {detail}); "
                                f"see `python -m domainbed_align.datasets.check --dataset "
                                f"{dataset} --data_dir {data_dir}`, move it away and run again")
            print(f"{target} already prepared ({report.total():,} images); nothing to do")
            return target
        paths, downloaded, used = {}, [], {}
        for key, src in sources.items():
            if key in given:
                paths[key] = given[key]
                used[key] = {"archive": os.path.abspath(given[key])}
                continue
            url = url_of.get(key, src.url)
            downloads = os.path.join(data_dir, ".downloads")
            os.makedirs(downloads, exist_ok=True)
            print(f"downloading {key}: {url}", flush=True)
            paths[key] = download(url, os.path.join(downloads, src.filename), timeout=timeout)
            downloaded.append(paths[key])
            used[key] = {"url": url}
        for key, path in paths.items():
            size = os.path.getsize(path)
            digest = sha256_file(path, f"sha256 {os.path.basename(path)}")
            want = (sha_of.get(key) or sources[key].sha256 or "").lower()
            if want and digest != want:
                raise DataError(f"{path} has sha256 {digest}, expected {want}; the file is "
                                f"damaged or another version: delete it and fetch it again")
            print(f"sha256 {digest}  {path} ({size:,} bytes"
                  f"{', verified' if want else ', no published checksum to compare'})", flush=True)
            if sources[key].size and size != sources[key].size:
                print(f"warning: {path} has {size:,} bytes, the {sources[key].filename} we know "
                      f"has {sources[key].size:,}", file=sys.stderr)
            used[key].update(sha256=digest, bytes=size)
        tmp = os.path.join(data_dir, f".{layout.folder}.partial")
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
        os.makedirs(tmp)
        try:
            stats = BUILDERS[dataset](paths, tmp, layout)
            report = _final_check(tmp, layout, expected)
            for kind, detail in report.warnings:
                print(f"warning: {kind}: {detail}", file=sys.stderr)
            if not report.ok:
                kind, detail = report.problems[0]
                more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
                counts_only = all(k == "image count differs" for k, _ in report.problems)
                raise DataError(f"the built {dataset} fails the final check: {kind}: {detail}{more}; "
                                f"nothing was put in place ("
                                + ("--expected_counts accepts other counts)" if counts_only else
                                   "is the archive complete and the right version?)"))
            manifest = {"dataset": dataset, "sources": used, "counts": report.counts,
                        "total": report.total(), "build": stats,
                        "prepared_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                            timespec="seconds")}
            atomic_write_text(os.path.join(tmp, MANIFEST), json.dumps(manifest, indent=1) + "\n")
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for path in downloaded if not keep_downloads else []:
            os.unlink(path)
            print(f"removed the downloaded {path} (--keep_downloads keeps it)")
        per_domain = ", ".join(f"{d} {sum(c.values()):,}" for d, c in report.counts.items())
        print(f"prepared {target}: {report.total():,} images ({per_domain})")
        return target
    finally:
        try:
            os.rmdir(os.path.join(data_dir, ".downloads"))
        except OSError:  # absent, or holds archives or partial downloads
            pass
        lock.release()


# -- backbone weights ----------------------------------------------------------------------------

def weights_url(arch: str) -> str:
    import torchvision
    from domainbed_align.networks import _RESNET_WEIGHTS
    if arch not in _RESNET_WEIGHTS:
        raise ConfigError(f"--weights {arch!r}: known are {', '.join(_RESNET_WEIGHTS)}")
    return getattr(torchvision.models, _RESNET_WEIGHTS[arch]).IMAGENET1K_V1.url


def fetch_weights(archs: Sequence[str], out: Optional[str] = None,
                  timeout: float = 30.0) -> List[str]:
    """Torchvision ImageNet weights into the torch hub cache (or `out`), hash-checked."""
    import torch
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    folder = os.path.abspath(out or cache)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {folder} ({e.strerror or e}); pick another --out") from None
    written = []
    for arch in dict.fromkeys(archs):
        url = weights_url(arch)
        dest = os.path.join(folder, os.path.basename(url))
        prefix = re.search(r"-([0-9a-f]{6,})\.", os.path.basename(url))
        for attempt in (0, 1):
            fresh = not os.path.exists(dest)
            if fresh:
                print(f"downloading {arch}: {url}", flush=True)
                download(url, dest, timeout=timeout)
            digest = sha256_file(dest, f"sha256 {os.path.basename(dest)}")
            if prefix is None or digest.startswith(prefix.group(1)):
                break
            os.unlink(dest)  # torch.hub rejects it too; a cached copy gets one fresh download
            if fresh or attempt:
                raise DataError(f"{dest} has sha256 {digest[:16]}..., torchvision expects "
                                f"{prefix.group(1)}...; removed it: run again")
        print(f"{arch}: {dest} (sha256 {digest})")
        written.append(dest)
    if out:
        print(f"copy {'these files' if len(written) > 1 else 'this file'} into "
              f"$TORCH_HOME/hub/checkpoints/ on the machine that trains (here that is {cache})")
    return written


# -- command line --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m domainbed_align.datasets.prepare",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", help="VLCS, PACS, OfficeHome, TerraIncognita or DomainNet")
    p.add_argument("--data_dir", help="folder that receives <data_dir>/VLCS, PACS, office_home, "
                                      "terra_incognita or domain_net")
    p.add_argument("--archive", action="append", default=[], metavar="[NAME=]PATH",
                   help="use an archive you have instead of downloading (TerraIncognita: images "
                        "and annotations; DomainNet: one zip per domain and the duplicate list; "
                        "told apart by content, or named, e.g. images=PATH, sketch=PATH)")
    p.add_argument("--url", action="append", default=[], metavar="[NAME=]URL",
                   help="download from this mirror instead")
    p.add_argument("--sha256", action="append", default=[], metavar="[NAME=]HEX",
                   help="require this sha256 of the archive")
    p.add_argument("--expected_counts", help="enforce these image counts instead of upstream's "
                                             "(JSON or a file; see check --help)")
    p.add_argument("--keep_downloads", action="store_true",
                   help="keep downloaded archives in <data_dir>/.downloads after success")
    p.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    p.add_argument("--weights", action="append", default=[], metavar="ARCH",
                   help="fetch torchvision ImageNet weights (resnet50, resnet18)")
    p.add_argument("--out", help="with --weights: write the files here, not the torch hub cache")
    p.add_argument("--resize", type=int, metavar="N",
                   help="with --from_dir: copy the prepared dataset there into --data_dir with "
                        "every image's shorter side at most N px (256: TerraIncognita decodes ~5x faster)")
    p.add_argument("--from_dir", help="with --resize: the --data_dir the dataset was prepared in")
    return p


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if not a.dataset and not a.weights:
        p.error("give --dataset NAME --data_dir D, or --weights ARCH")
    if a.dataset and not a.data_dir:
        p.error("--dataset needs --data_dir")
    if a.out and not a.weights:
        p.error("--out goes with --weights (datasets go to --data_dir)")
    if (a.resize is None) != (a.from_dir is None):
        p.error("--resize N and --from_dir D go together: a resized copy of the dataset prepared in D")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if a.weights:
            fetch_weights(a.weights, a.out, a.timeout)
        if a.dataset and a.resize is not None:
            from domainbed_align.datasets.resize import resize_dataset
            resize_dataset(a.dataset, a.from_dir, a.data_dir, a.resize)
        elif a.dataset:
            _preparable(a.dataset)
            layout = get_layout(a.dataset)
            prepare_dataset(a.dataset, a.data_dir, a.archive, a.url, a.sha256,
                            parse_expected(a.expected_counts, layout), a.keep_downloads,
                            a.timeout)
        return 0
    except DomainBedAlignError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was put in place; run the same command again to resume",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
