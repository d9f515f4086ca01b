"""A fabricated VLCS-layout image folder for GPU checks on a machine without the real data.

    python benchmarks/fake_vlcs.py --out D [--per_class 60] [--size 227]

Writes D/VLCS/<Domain>/<class>/<n>.jpg with VLCS's four domains and five classes: the class is
a white shape (disc, square, horizontal bar, vertical bar, cross) at a random place and scale,
the domain a background style (plain colour, noise, stripes, gradient). Shapes survive
DomainBed's colour jitter, so a ResNet-50 trained from scratch (no ImageNet weights offline)
learns them in a few hundred steps: accuracy well above chance, so that float32 and bf16 runs
can disagree if they are going to.
"""
import argparse
import os
import sys

import numpy as np

DOMAINS = ("Caltech101", "LabelMe", "SUN09", "VOC2007")
CLASSES = ("bird", "car", "chair", "dog", "person")


def background(kind: int, size: int, rng) -> np.ndarray:
    h = w = size
    base = rng.randint(40, 200, 3)
    if kind == 0:
        img = np.ones((h, w, 3)) * base
    elif kind == 1:
        img = base + rng.normal(0, 40, (h, w, 3))
    elif kind == 2:
        stripes = (np.arange(w) // max(4, size // 16)) % 2
        img = np.ones((h, w, 3)) * base * (0.6 + 0.4 * stripes)[None, :, None]
    else:
        img = np.linspace(0.3, 1.0, h)[:, None, None] * np.ones((h, w, 3)) * base
    return img


def shape(label: int, size: int, rng) -> np.ndarray:
    """(size, size) bool mask of the class's shape."""
    r = int(size * rng.uniform(0.12, 0.22))
    cy, cx = rng.randint(r + 2, size - r - 2, 2)
    yy, xx = np.mgrid[:size, :size]
    dy, dx = np.abs(yy - cy), np.abs(xx - cx)
    t = max(2, r // 3)
    return [(dy ** 2 + dx ** 2) <= r ** 2, (dy <= r) & (dx <= r), (dy <= t) & (dx <= r),
            (dy <= r) & (dx <= t), ((dy <= t) & (dx <= r)) | ((dy <= r) & (dx <= t))][label]


def write(out: str, per_class: int, size: int) -> int:
    from PIL import Image
    n = 0
    for d, domain in enumerate(DOMAINS):
        for label, cls in enumerate(CLASSES):
            folder = os.path.join(out, "VLCS", domain, cls)
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                rng = np.random.RandomState(d * 1_000_000 + label * 100_000 + i)
                img = background(d, size, rng)
                img[shape(label, size, rng)] = 235
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                    os.path.join(folder, f"{i:05d}.jpg"), quality=90)
                n += 1
    return n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--per_class", type=int, default=60)
    p.add_argument("--size", type=int, default=227)
    a = p.parse_args(argv)
    print(f"wrote {write(a.out, a.per_class, a.size)} images under {a.out}/VLCS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
