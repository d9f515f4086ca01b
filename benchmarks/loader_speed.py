"""Decoded, augmented 224-px training images per second per CPU core, against what the GPU eats.

    python benchmarks/loader_speed.py [--n 48] [--costs results/benchmarks/step_cost_h200.txt]

Fabricates JPEGs at the datasets' real sizes (smooth colour fields plus mild noise, quality 90;
at 1024 x 747 that is ~114 KB a file, as the real ones' ~112 KB average), then times, in one
process with one thread (a DataLoader worker's setting), the training path of
`ImageFolderDomain` (PIL decode, DomainBed's RandomResizedCrop / flip / ColorJitter /
grayscale, normalise) on each, for the original files and for the pre-resized copies that
`prepare --resize N` writes (`datasets/resize.py`, the same code). Sizes assumed:
- VLCS: 227 x 227 (DomainBed's VLCS.tar.gz; its photos are small);
- TerraIncognita: 1024 x 747, DomainBed's eccv_18_all_images_sm (6.49 GB for 57,868 images,
  ~112 KB each: the down-sized ECCV'18 set), and 2048 x 1536, the camera traps' full frames.
Then, for each algorithm of a step-cost table (benchmarks/step_cost.py on a GPU, ResNet-50,
3 x 32 images per step), the images per second its step consumes (96 / step seconds) and the
loader cores it needs to keep up with each kind of file: ceil(consumption / per-core rate).

With `--pipeline_steps S` it also runs the trainer's own stream (`train_batches`: 3 domains x
32 images, `loader_workers(3)` persistent workers per domain from this machine's usable cores,
pinned memory when CUDA is present) over S steps on `--pipeline_kind` files and prints the
images per second it delivers (wall clock) next to the fastest algorithm's consumption.
"""
import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_hours import resnet_costs  # noqa: E402

from domainbed_align.datasets.image_folder import ImageFolderDomain  # noqa: E402
from domainbed_align.datasets.resize import resize_image  # noqa: E402

BATCH_PER_STEP = 96  # 3 domains x 32 (DomainBed's batch on image datasets)
KINDS = [  # label, (width, height) of the files, pre-resize shorter side or None
    ("VLCS 227x227", (227, 227), None),
    ("Terra 1024x747", (1024, 747), None),
    ("Terra 1024x747 --resize 256", (1024, 747), 256),
    ("Terra 1024x747 --resize 320", (1024, 747), 320),
    ("Terra 2048x1536", (2048, 1536), None),  # a quarter of --n files (slow to fabricate)
]


def fabricate(path: str, size, seed: int) -> None:
    """A photo-like JPEG: low-frequency colour field plus mild noise."""
    from PIL import Image
    w, h = size
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, 256, (max(2, h // 64), max(2, w // 64), 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), np.float32)
    img = np.clip(field + rng.normal(0, 3, field.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, "JPEG", quality=90)


def rate(domain: ImageFolderDomain, n: int, decode_only: bool = False) -> float:
    """Items per CPU second of this process (one thread; per-item seeds as the training loader
    sets them). CPU time, not wall time: on a shared machine the wall clock also counts the
    time other processes held the core, CPU time is what one dedicated core would spend."""
    from PIL import Image
    t0 = time.process_time()
    for i in range(n):
        if decode_only:
            with Image.open(domain.items[i][0]) as im:
                im.convert("RGB").load()
        else:
            torch.manual_seed(i)
            domain[i]
    return n / (time.process_time() - t0)


def without_hue(domain: ImageFolderDomain) -> ImageFolderDomain:
    """The same pipeline with ColorJitter's hue term off (to show what the hue shift costs)."""
    from torchvision.transforms import v2
    copy = ImageFolderDomain(domain.items, domain.size, True)
    copy.transform = v2.Compose([v2.ColorJitter(0.3, 0.3, 0.3, 0.0) if isinstance(t, v2.ColorJitter)
                                 else t for t in domain.transform.transforms])
    return copy


def pipeline_rate(paths, steps: int) -> tuple:
    """(images/s over `steps` training steps after 3 warm-up ones, workers per domain)."""
    from domainbed_align.datasets.loaders import loader_workers, train_batches
    workers = loader_workers(3)
    domains = [ImageFolderDomain([(p, 0) for p in paths], 224, augment=True) for _ in range(3)]
    stream = train_batches(domains, [range(len(paths))] * 3, 32, 0, 0, workers,
                           pin_memory=torch.cuda.is_available())
    try:
        for _ in range(3):
            next(stream)
        t0 = time.perf_counter()
        for _ in range(steps):
            next(stream)
        return steps * BATCH_PER_STEP / (time.perf_counter() - t0), workers
    finally:
        stream.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=48, help="images per kind (timed twice, best kept)")
    p.add_argument("--costs", default="results/benchmarks/step_cost_h200.txt",
                   help="step_cost.py output with a ResNet-50 table")
    p.add_argument("--kinds", nargs="+", help="only these labels (default: all)")
    p.add_argument("--pipeline_steps", type=int, default=0,
                   help="also time the trainer's multi-worker stream over this many steps")
    p.add_argument("--pipeline_kind", default="Terra 1024x747 --resize 256")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    kinds = [k for k in KINDS if not a.kinds or k[0] in a.kinds]
    print(f"torch {torch.__version__}, one process, 1 thread; {a.n} fabricated JPEGs per kind; "
          f"host has {os.cpu_count()} cores")
    print("rates: images per CPU second of one core (process time, so other load on this "
          "machine does not count)")
    print(f"{'files':<30}{'KB/file':>8}{'px decoded':>12}{'decode/s':>10}{'decode+aug/s':>14}"
          f"{'(no hue)/s':>12}")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        originals = {}
        for label, size, shorter in kinds:
            if size not in originals:  # fabricated once per size
                folder = os.path.join(tmp, f"{size[0]}x{size[1]}")
                os.makedirs(folder)
                n = a.n if size[0] * size[1] < 10**6 else max(4, a.n // 4)
                originals[size] = [os.path.join(folder, f"{i}.jpg") for i in range(n)]
                for i, path in enumerate(originals[size]):
                    fabricate(path, size, i)
            items = []
            for path in originals[size]:
                if shorter:
                    resize_image(path, f"{path}.{shorter}.jpg", shorter)
                    path = f"{path}.{shorter}.jpg"
                items.append((path, 0))
            domain = ImageFolderDomain(items, 224, augment=True)
            kb = np.mean([os.path.getsize(pth) for pth, _ in items]) / 1024
            from PIL import Image
            with Image.open(items[0][0]) as im:
                px = f"{im.size[0]}x{im.size[1]}"
            rate(domain, min(4, len(items)))  # warm-up (imports, allocator)
            dec = max(rate(domain, len(items), decode_only=True) for _ in range(2))
            aug = max(rate(domain, len(items)) for _ in range(2))
            no_hue = max(rate(without_hue(domain), len(items)) for _ in range(2))
            rates[label] = aug
            if label == a.pipeline_kind:
                pipeline_paths = [pth for pth, _ in items]
            print(f"{label:<30}{kb:>8.0f}{px:>12}{dec:>10.0f}{aug:>14.0f}{no_hue:>12.0f}", flush=True)
        if a.pipeline_steps:
            delivered, workers = pipeline_rate(pipeline_paths, a.pipeline_steps)
    costs = resnet_costs(a.costs)
    print(f"\nGPU consumption from {a.costs} (ResNet-50, {BATCH_PER_STEP} images per step) and "
          f"loader cores needed = ceil(images/s / per-core decode+aug rate):")
    short = [k[0].replace("Terra ", "T").replace(" --resize ", "/r") for k in kinds]
    print(f"{'algorithm':<10}{'ms/step':>8}{'img/s':>7}" + "".join(f"{s:>15}" for s in short))
    for name, ms in costs.items():
        need = BATCH_PER_STEP / (ms / 1000)
        cells = "".join(f"{math.ceil(need / rates[k[0]]):>15}" for k in kinds)
        print(f"{name:<10}{ms:>8.1f}{need:>7.0f}{cells}")
    if a.pipeline_steps:
        fastest = max(BATCH_PER_STEP / (ms / 1000) for ms in costs.values())
        print(f"\ntrainer's stream on '{a.pipeline_kind}' files, {workers} workers per domain x 3 "
              f"({os.cpu_count()} cores, pinned memory {torch.cuda.is_available()}): "
              f"{delivered:.0f} images/s over {a.pipeline_steps} steps; the fastest algorithm "
              f"above consumes {fastest:.0f}: {'keeps up' if delivered >= fastest else 'does NOT keep up'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
