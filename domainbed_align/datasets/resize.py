"""A pre-resized copy of a prepared image dataset, made once, so the loader decodes small JPEGs.

    python -m domainbed_align.datasets.prepare --dataset TerraIncognita --from_dir D \\
        --data_dir D256 --resize 256

Every image whose shorter side exceeds N is resized (aspect kept, PIL's antialiased bilinear)
to shorter side N and written as JPEG (quality 95); smaller images are copied byte for byte.
DomainBed's augmentation then sees the same image content: RandomResizedCrop draws its scale
and aspect relative to the image, so the crops cover the same regions; only the pixels they
start from are fewer (README, "Mixed precision and data loading", says where that shows).
Built in `<data_dir>/.<folder>.partial` and renamed when complete; `.prepare.json` is the
source's, plus a `resize` entry.
"""
import contextlib
import datetime
import json
import os
import shutil
from multiprocessing import Pool
from typing import List, Optional, Tuple

from domainbed_align.datasets.check import get_layout, is_image
from domainbed_align.lib.errors import DataError
from domainbed_align.lib.misc import atomic_write_text

MANIFEST = ".prepare.json"
JPEG_QUALITY = 95


def resized_size(width: int, height: int, shorter: int) -> Tuple[int, int]:
    """(w, h) with the shorter side `shorter` and the aspect kept; unchanged if already smaller."""
    if min(width, height) <= shorter:
        return width, height
    scale = shorter / min(width, height)
    return (shorter, max(1, round(height * scale))) if width <= height else \
        (max(1, round(width * scale)), shorter)


def resize_image(src: str, dst: str, shorter: int) -> bool:
    """Write `src` resized to shorter side `shorter` at `dst` (JPEG), or copy it if it is not
    larger; True if resized. The pixels stay as DomainBed's loader reads them (RGB, EXIF
    orientation not applied)."""
    from PIL import Image
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        with Image.open(src) as im:
            size = resized_size(*im.size, shorter)
            if size == im.size:
                shutil.copyfile(src, dst)
                return False
            out = im.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {src}: {e}; remove or replace the file") from e
    out.save(dst, "JPEG", quality=JPEG_QUALITY)
    return True


def _job(args):
    return resize_image(*args)


def list_tree(root: str) -> List[str]:
    """Image paths under root, relative to it, sorted (hidden files and folders skipped)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.relpath(os.path.join(folder, f), root) for f in sorted(files)
                  if not f.startswith(".") and is_image(f)]
    return found


@contextlib.contextmanager
def _building(tmp: str, target: str):
    """A fresh `tmp` folder to fill; renamed to `target` if the block ends cleanly, else removed
    (so a killed or failed run never leaves a folder that looks complete)."""
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
    os.makedirs(tmp)
    try:
        yield tmp
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _source_manifest(src: str) -> dict:
    path = os.path.join(src, MANIFEST)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def resize_dataset(dataset: str, from_dir: str, data_dir: str, shorter: int,
                   workers: Optional[int] = None) -> str:
    """Make `<data_dir>/<folder>` from the prepared `<from_dir>/<folder>`; returns its path."""
    from tqdm import tqdm
    if shorter < 224:
        raise DataError(f"--resize {shorter} is below the 224 px the networks see; use 256 or more")
    folder = get_layout(dataset).folder
    src, target = os.path.join(from_dir, folder), os.path.join(data_dir, folder)
    if not os.path.isdir(src):
        raise DataError(f"{src} does not exist; prepare {dataset} there first (without --resize)")
    if os.path.abspath(src) == os.path.abspath(target):
        raise DataError("--resize writes a copy: give a --data_dir other than --from_dir")
    if os.path.exists(target):
        print(f"{target} already exists; nothing to do (move it away to rebuild)")
        return target
    files = list_tree(src)
    if not files:
        raise DataError(f"{src} holds no images")
    with _building(os.path.join(data_dir, f".{folder}.partial"), target) as tmp:
        jobs = [(os.path.join(src, f), os.path.join(tmp, f), shorter) for f in files]
        workers = workers or os.cpu_count() or 1
        with Pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
            done = pool.imap(_job, jobs, chunksize=16) if pool else map(_job, jobs)
            resized = sum(tqdm(done, total=len(jobs), desc=f"resizing {dataset} to {shorter} px",
                               mininterval=5))
        manifest = _source_manifest(src)
        manifest["resize"] = {"shorter_side": shorter, "from": os.path.abspath(src),
                              "resized": resized, "copied": len(files) - resized,
                              "jpeg_quality": JPEG_QUALITY, "made_at": _now()}
        atomic_write_text(os.path.join(tmp, MANIFEST), json.dumps(manifest, indent=1) + "\n")
    print(f"resized copy {target}: {resized:,} of {len(files):,} images resized to shorter side "
          f"{shorter} px, the rest copied")
    return target
