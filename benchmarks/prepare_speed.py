"""Time `prepare` and `check` on a fabricated TerraIncognita-like archive; extrapolate.

    python benchmarks/prepare_speed.py [--images 2000] [--workdir DIR]

The image archive holds `--images` JPEGs of 1024x747 px and ~115 KB (what the real
eccv_18_all_images_sm.tar.gz holds on average: 6.49 GB / 57,864 images), 43% of them annotated
at the four kept locations (24,788 / 57,864 in the real release). Prints per-phase rates and
what they give for the real archive sizes. Network time is not included (it is the user's).
"""
import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from fake_datasets import TERRA_CLASSES, write_tar  # noqa: E402

REAL_IMAGES_BYTES, REAL_IMAGES, REAL_KEPT, REAL_VLCS = 6_492_615_601, 57_864, 24_788, 10_729


def fabricate(folder, n):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:747, 0:1024]
    base = np.stack([(x / 4) % 256, (y / 3) % 256, ((x + y) / 5) % 256], -1)
    blobs = []
    for _ in range(16):  # 16 distinct pictures, reused: gzip's 32 KB window cannot tell
        buf = io.BytesIO()
        Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
                        ).save(buf, "JPEG", quality=75)
        blobs.append(buf.getvalue())
    names = [f"{i:08d}.jpg" for i in range(n)]
    write_tar(os.path.join(folder, "images.tar.gz"),
              {f"eccv_18_all_images_sm/{nm}": blobs[i % 16] for i, nm in enumerate(names)})
    locs = (38, 43, 46, 100)
    kept = [nm for i, nm in enumerate(names) if (i * REAL_KEPT) % REAL_IMAGES < REAL_KEPT]
    keep = set(kept)
    images = [{"id": nm, "file_name": nm, "location": locs[i % 4] if nm in keep else 7}
              for i, nm in enumerate(names)]
    anns = [{"id": i, "image_id": nm, "category_id": (i // 4) % 10} for i, nm in enumerate(names)]
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": i, "name": c} for i, c in enumerate(TERRA_CLASSES)]}
    write_tar(os.path.join(folder, "annotations.tar.gz"),
              {"eccv_18_annotation_files/train_annotations.json": json.dumps(doc).encode()})
    return len(kept)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--workdir")
    a = p.parse_args()
    from domainbed_align.datasets import check, prepare
    from domainbed_align.datasets.download import sha256_file
    work = a.workdir or tempfile.mkdtemp(prefix="prepare_speed_")
    os.makedirs(work, exist_ok=True)
    kept = fabricate(work, a.images)
    archive = os.path.join(work, "images.tar.gz")
    size = os.path.getsize(archive)
    t0 = time.perf_counter()
    sha256_file(archive)
    t_sha = time.perf_counter() - t0
    import gzip
    t0 = time.perf_counter()
    with gzip.open(archive) as f:
        while f.read(1 << 20):
            pass
    t_gunzip = time.perf_counter() - t0
    data = os.path.join(work, "data")
    shutil.rmtree(data, ignore_errors=True)
    t0 = time.perf_counter()
    prepare.prepare_dataset("TerraIncognita", data, [f"images={archive}",
                            f"annotations={os.path.join(work, 'annotations.tar.gz')}"],
                            expected={"total": kept})
    t_all = time.perf_counter() - t0
    layout = check.get_layout("TerraIncognita")
    t0 = time.perf_counter()
    report = check.check_folder(layout, data, expected={"total": kept}, workers=2)
    t_check = time.perf_counter() - t0
    assert report.ok, report.problems[:3]
    mb = size / 1e6
    print(f"fabricated: {a.images} images, {kept} kept, archive {mb:.0f} MB "
          f"({size / a.images / 1e3:.0f} KB per image), cpus {os.cpu_count()}")
    print(f"sha256 pass:   {t_sha:6.1f} s  {mb / t_sha:6.0f} MB/s")
    print(f"gunzip alone:  {t_gunzip:6.1f} s  {mb / t_gunzip:6.0f} MB/s (the floor of any build)")
    print(f"prepare total: {t_all:6.1f} s  {mb / t_all:6.0f} MB/s of archive (sha256 + build + check)")
    print(f"check (decode, 2 threads): {t_check:6.1f} s  {kept / t_check:6.0f} images/s")
    real_prepare = REAL_IMAGES_BYTES / (size / t_all)
    print(f"extrapolated TerraIncognita: prepare {real_prepare / 60:.1f} min for the "
          f"{REAL_IMAGES_BYTES / 1e9:.2f} GB archive; check {REAL_KEPT / (kept / t_check) / 60:.1f} min "
          f"for {REAL_KEPT:,} images")
    print(f"extrapolated VLCS (per image, {REAL_VLCS:,} images): prepare "
          f"{REAL_VLCS * t_all / a.images / 60:.1f} min at this image size (an upper bound: VLCS "
          f"images are smaller); check {REAL_VLCS / (kept / t_check) / 60:.1f} min")
    if not a.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
