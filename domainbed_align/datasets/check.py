"""Validate a DomainBed image folder and its mask folder before a sweep spends GPU hours on it.

    python -m domainbed_align.datasets.check --dataset VLCS --data_dir D [--mask_dir M]
    python -m domainbed_align.datasets.check --dataset DomainFolder --data_dir TREE [--mask_dir M]

Finds missing or stray domain/class folders, empty class folders, zero-byte or undecodable
images, image counts that differ from the published ones, and for a mask folder: missing or
unreadable masks, masks whose size differs from their image, and empty or full masks
(binarised at 128, as the localisation metrics do). Prints a report; exit 0 when clean (warnings
allowed), 1 when it found a problem, 2 on a usage error.

Count policy. VLCS, PACS and OfficeHome come from one fixed archive each, so a count that
differs from upstream's means another or a damaged copy: a problem. TerraIncognita is rebuilt
from camera-trap annotations whose file upstream itself changed over time, and DomainNet's
published counts predate its cleaned archives and upstream's duplicate removal, so for these a
different count is a warning (the images are still a valid build). DomainFolder has no
published counts. Counts given with --expected_counts are always enforced.
"""
import argparse
import json
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from domainbed_align.datasets.image_folder import IMAGE_EXTENSIONS
from domainbed_align.lib.errors import ConfigError, DomainBedAlignError

MASK_THRESHOLD = 128  # 8-bit value of the metrics' 0.5 threshold (>=)
EXPECTED_KEYS_HELP = ('a JSON object {"total": N, "<Domain>": N or {"<class>": N, ...}, ...} '
                      'or a path to a file holding one')


@dataclass(frozen=True)
class Layout:
    """What a prepared dataset folder must hold: `<data_dir>/<folder>/<domain>/<class>/`."""

    name: str
    folder: str
    domains: Tuple[str, ...]
    classes: Tuple[str, ...]
    expected: Dict[str, object]     # "total" and/or per-domain counts (int or {class: int})
    count_policy: str               # "error" or "warn" when the counts differ
    mask_optional_classes: Tuple[str, ...] = ()  # classes whose masks may be empty or full
    ignored_files: Tuple[str, ...] = ()          # files at the top that are not stray


def _layouts() -> Dict[str, Layout]:
    from domainbed_align.datasets.image_folder import (VLCS, DomainNet, OfficeHome, PACS,
                                                       TerraIncognita)
    return {
        "VLCS": Layout(
            "VLCS", VLCS.DIR, tuple(VLCS.DOMAIN_DIRS), tuple(VLCS.CLASSES),
            # upstream DomainBed's VLCS.tar.gz: C 1,415, L 2,656, S 3,282, V 3,376 = 10,729
            {"total": 10729, "Caltech101": 1415, "LabelMe": 2656, "SUN09": 3282, "VOC2007": 3376},
            "error"),
        "TerraIncognita": Layout(
            "TerraIncognita", TerraIncognita.DIR, tuple(TerraIncognita.DOMAIN_DIRS),
            tuple(TerraIncognita.CLASSES),
            {"total": 24788},  # DomainBed paper; per-location counts are not published
            "warn",
            # an empty camera-trap frame has no object: an empty (or full) mask is truthful there
            mask_optional_classes=("empty",)),
        # PACS (Li et al. 2017) as upstream's PACS.zip holds it: 2,048 + 2,344 + 1,670 + 3,929
        "PACS": Layout(
            "PACS", PACS.DIR, tuple(PACS.DOMAIN_DIRS), tuple(PACS.CLASSES),
            {"total": 9991, "art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929},
            "error"),
        # Office-Home (Venkateswara et al. 2017), its OfficeHomeDataset_10072016 release
        "OfficeHome": Layout(
            "OfficeHome", OfficeHome.DIR, tuple(OfficeHome.DOMAIN_DIRS), tuple(OfficeHome.CLASSES),
            {"total": 15588, "Art": 2427, "Clipart": 4365, "Product": 4439, "Real World": 4357},
            "error"),
        # DomainNet: the per-domain counts of Peng et al. 2019 (Table 1), whose sum is the
        # DomainBed paper's 586,575. The archives upstream downloads are the later "cleaned"
        # clipart and painting, and upstream then deletes its duplicate list; no published count
        # describes that build, so a difference is a warning (as TerraIncognita's).
        "DomainNet": Layout(
            "DomainNet", DomainNet.DIR, tuple(DomainNet.DOMAIN_DIRS), tuple(DomainNet.CLASSES),
            {"total": 586575, "clipart": 48129, "infograph": 51605, "painting": 72266,
             "quickdraw": 172500, "real": 172947, "sketch": 69128},
            "warn"),
    }


def folder_layout(data_dir: str) -> Layout:
    """A DomainFolder tree's layout: its domains.json, else what the folders hold."""
    from domainbed_align.datasets.image_folder import SPEC_FILE, read_folder_spec
    domains, _, classes = read_folder_spec(data_dir)
    if classes is None:
        classes = tuple(sorted({e.name for d in domains if os.path.isdir(os.path.join(data_dir, d))
                                for e in os.scandir(os.path.join(data_dir, d))
                                if e.is_dir() and not e.name.startswith(".")}))
    return Layout("DomainFolder", "", domains, tuple(classes), {}, "warn",
                  ignored_files=(SPEC_FILE,))


def get_layout(name: str, data_dir: Optional[str] = None) -> Layout:
    """The layout of dataset `name` (DomainFolder's is read from `data_dir`)."""
    if name == "DomainFolder":
        return folder_layout(data_dir)
    layouts = _layouts()
    if name not in layouts:
        raise ConfigError(f"no folder layout for dataset {name!r}; known: "
                          f"{', '.join(layouts)}, DomainFolder")
    return layouts[name]


def parse_expected(text: Optional[str], layout: Layout) -> Optional[Dict[str, object]]:
    """--expected_counts (JSON text or a file path) -> validated dict, or None."""
    if text is None:
        return None
    try:
        if os.path.isfile(text):
            with open(text) as f:
                text = f.read()
        value = json.loads(text)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--expected_counts must be {EXPECTED_KEYS_HELP} ({e})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--expected_counts must be {EXPECTED_KEYS_HELP}")
    for key, n in value.items():
        if key == "total" and isinstance(n, int):
            continue
        if key in layout.domains and (isinstance(n, int) or (
                isinstance(n, dict) and all(c in layout.classes and isinstance(v, int)
                                            for c, v in n.items()))):
            continue
        raise ConfigError(f"--expected_counts: bad entry {key!r}: {n!r}; expected "
                          f"{EXPECTED_KEYS_HELP} with domains {', '.join(layout.domains)}")
    return value


@dataclass
class Report:
    """Findings of one check: problems make it fail, warnings are for information."""

    base: str
    counts: Dict[str, Dict[str, int]] = field(default_factory=dict)
    problems: List[Tuple[str, str]] = field(default_factory=list)   # (kind, detail)
    warnings: List[Tuple[str, str]] = field(default_factory=list)

    def add(self, severity: str, kind: str, detail: str) -> None:
        (self.problems if severity == "error" else self.warnings).append((kind, detail))

    @property
    def ok(self) -> bool:
        return not self.problems

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _visible(entries):
    return [e for e in entries if not e.name.startswith(".")]


def scan_layout(base: str, layout: Layout, report: Report) -> Dict[Tuple[str, str], List[str]]:
    """Folder structure and per-class image lists; adds structural findings to `report`."""
    images: Dict[Tuple[str, str], List[str]] = {}
    if not os.path.isdir(base):
        report.add("error", "missing data folder", f"{base} does not exist (--data_dir is the "
                   f"folder that holds {layout.folder}/; prepare it with `python -m "
                   f"domainbed_align.datasets.prepare --dataset {layout.name}`)")
        return images
    entries = _visible(os.scandir(base))
    for e in sorted(entries, key=lambda e: e.name):
        if e.is_dir() and e.name not in layout.domains:
            report.add("error", "stray domain folder", e.name)
        elif not e.is_dir() and e.name not in layout.ignored_files:
            report.add("warning", "stray file", e.name)
    for domain in layout.domains:
        ddir = os.path.join(base, domain)
        if not os.path.isdir(ddir):
            report.add("error", "missing domain folder", domain)
            continue
        report.counts[domain] = {}
        sub = _visible(os.scandir(ddir))
        for e in sorted(sub, key=lambda e: e.name):
            if e.is_dir() and e.name not in layout.classes:
                report.add("error", "stray class folder", f"{domain}/{e.name}")
            elif not e.is_dir():
                report.add("warning", "stray file", f"{domain}/{e.name}")
        for cls in layout.classes:
            cdir = os.path.join(ddir, cls)
            if not os.path.isdir(cdir):
                report.add("error", "missing class folder", f"{domain}/{cls}")
                continue
            names = sorted(e.name for e in _visible(os.scandir(cdir)) if e.is_file())
            imgs = [n for n in names if is_image(n)]
            for n in names:
                if not is_image(n):
                    report.add("warning", "not an image (ignored by the loader)", f"{domain}/{cls}/{n}")
            if not imgs:
                report.add("error", "class folder without images", f"{domain}/{cls}")
            images[(domain, cls)] = imgs
            report.counts[domain][cls] = len(imgs)
    return images


def compare_counts(report: Report, layout: Layout, expected: Optional[dict]) -> None:
    """Counts against `expected` (default: the layout's published ones) under the policy."""
    enforced = expected is not None
    expected = layout.expected if expected is None else expected
    severity = "error" if enforced or layout.count_policy == "error" else "warning"
    why = "" if severity == "error" else " (annotation versions differ; the build is usable)"
    for key, want in expected.items():
        if key == "total":
            have = report.total()
            if have != want:
                report.add(severity, "image count differs", f"total {have:,}, expected {want:,}{why}")
        elif key in report.counts:
            if isinstance(want, int):
                have = sum(report.counts[key].values())
                if have != want:
                    report.add(severity, "image count differs",
                               f"{key} {have:,}, expected {want:,}{why}")
            else:
                for cls, n in want.items():
                    have = report.counts[key].get(cls, 0)
                    if have != n:
                        report.add(severity, "image count differs",
                                   f"{key}/{cls} {have:,}, expected {n:,}{why}")


def _open_image(path: str, decode: bool = True):
    """(size, None) of an image (fully decoded unless `decode` is false), or (None, reason)."""
    from PIL import Image
    try:
        if os.path.getsize(path) == 0:
            return None, "zero bytes"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                if decode:
                    im.load()
                return im.size, None
    except Exception as e:  # PIL raises many types for a damaged file
        return None, f"{type(e).__name__}: {e}"


def _inspect_mask(path: str):
    """(size, extrema, None) of a mask, or (None, None, reason)."""
    from PIL import Image
    try:
        if os.path.getsize(path) == 0:
            return None, None, "zero bytes"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return im.size, im.convert("L").getextrema(), None
    except Exception as e:
        return None, None, f"{type(e).__name__}: {e}"


def inspect_files(base: str, images: Dict[Tuple[str, str], List[str]], layout: Layout,
                  report: Report, mask_dir: Optional[str] = None, workers: int = 4,
                  decode: bool = True) -> None:
    """Decode every image (or read its header) and every mask; adds findings to `report`."""
    from domainbed_align.datasets.download import progress_bar
    rels = [f"{d}/{c}/{n}" for (d, c), names in sorted(images.items()) for n in names]
    masks_ok = mask_dir is not None and os.path.isdir(mask_dir)
    if mask_dir is not None and not masks_ok:
        report.add("error", "missing mask folder", f"{mask_dir} does not exist")

    def one(rel):
        size, reason = _open_image(os.path.join(base, rel), decode)
        mask = None
        if masks_ok:
            mpath = os.path.join(mask_dir, os.path.splitext(rel)[0] + ".png")
            mask = _inspect_mask(mpath) if os.path.exists(mpath) else "missing"
        return rel, size, reason, mask

    with ThreadPoolExecutor(max(1, workers)) as pool, \
            progress_bar(len(rels), "checking images") as bar:
        for rel, size, reason, mask in pool.map(one, rels):
            bar.update(1)
            if reason == "zero bytes":
                report.add("error", "zero-byte image", rel)
            elif reason:
                report.add("error", "unreadable image", f"{rel} ({reason})")
            if mask is None:
                continue
            mrel = os.path.splitext(rel)[0] + ".png"
            if mask == "missing":
                report.add("error", "missing mask", mrel)
                continue
            msize, extrema, mreason = mask
            if mreason:
                report.add("error", "unreadable mask", f"{mrel} ({mreason})")
                continue
            if size is not None and msize != size:
                report.add("error", "mask size differs from image",
                           f"{mrel} {msize[0]}x{msize[1]}, image {size[0]}x{size[1]}")
            lo, hi = extrema
            kind = ("empty mask" if hi < MASK_THRESHOLD else
                    "full mask" if lo >= MASK_THRESHOLD else None)
            if kind:
                cls = rel.split("/")[1]
                report.add("warning" if cls in layout.mask_optional_classes else "error", kind, mrel)
    if masks_ok:
        wanted = {os.path.splitext(r)[0] + ".png" for r in rels}
        for root, dirs, files in os.walk(mask_dir):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for n in sorted(files):
                rel = os.path.relpath(os.path.join(root, n), mask_dir).replace(os.sep, "/")
                if not n.startswith(".") and rel not in wanted:
                    report.add("warning", "mask without image", rel)


def check_folder(layout: Layout, data_dir: str, mask_dir: Optional[str] = None,
                 expected: Optional[dict] = None, decode: bool = True, workers: int = 4) -> Report:
    base = os.path.join(data_dir, layout.folder)
    report = Report(base)
    images = scan_layout(base, layout, report)
    if report.counts:
        compare_counts(report, layout, expected)
    inspect_files(base, images, layout, report, mask_dir, workers, decode)
    return report


def format_report(report: Report, layout: Layout, limit: int = 20) -> str:
    lines = [f"{layout.name} at {report.base}: {report.total():,} images"]
    for domain, per_class in report.counts.items():
        lines.append(f"  {domain}: {sum(per_class.values()):,} ("
                     + ", ".join(f"{c} {n}" for c, n in per_class.items()) + ")")
    for title, items in (("problem", report.problems), ("warning", report.warnings)):
        by_kind: Dict[str, List[str]] = {}
        for kind, detail in items:
            by_kind.setdefault(kind, []).append(detail)
        for kind, details in by_kind.items():
            lines.append(f"{title}: {kind} ({len(details)}):")
            lines += [f"  {d}" for d in details[:limit]]
            if len(details) > limit:
                lines.append(f"  ... and {len(details) - limit} more (--limit 0 lists all)")
    lines.append("OK" if report.ok else
                 f"FAILED: {len(report.problems)} problem{'s' * (len(report.problems) != 1)}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m domainbed_align.datasets.check",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="VLCS, PACS, OfficeHome, TerraIncognita, "
                                                     "DomainNet or DomainFolder")
    p.add_argument("--data_dir", required=True, help="the folder that holds the dataset folder "
                                                      "(DomainFolder: the tree itself)")
    p.add_argument("--mask_dir", help="relevance-mask folder mirroring <Domain>/<class>/<stem>.png")
    p.add_argument("--expected_counts", help=f"enforce these counts: {EXPECTED_KEYS_HELP}")
    p.add_argument("--no_decode", action="store_true",
                   help="read only image headers, not the pixels (much faster)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--limit", type=int, default=20, help="findings listed per kind (0 = all)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        layout = get_layout(a.dataset, a.data_dir)
        expected = parse_expected(a.expected_counts, layout)
        report = check_folder(layout, a.data_dir, a.mask_dir, expected,
                              decode=not a.no_decode, workers=a.workers)
    except DomainBedAlignError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(report, layout, a.limit or 10**9))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
