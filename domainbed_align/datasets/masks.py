"""Relevance masks for image folders: `python -m domainbed_align.datasets.masks`.

VLCS and TerraIncognita ship no explanation masks, so the mask-based baselines (GRADIA, RES,
CARE, RRR, GradMask, HAICS, ActDiff) need pseudo-masks. This command writes a mask folder that
`--mask_dir` reads: `<out>/<Domain>/<class>/<stem>.png`, 8-bit, 0..255 = relevance, the size
of its image. Generators:
- `centre`: a Gaussian centre prior (objects in VLCS are mostly framed); weight-free.
- `grabcut`: OpenCV's GrabCut colour model started from a centred rectangle; weight-free,
  offline (`pip install opencv-python-headless`).
- `gradcam`: thresholded Grad-CAM of the true class from a finished run (`--run_dir`).
- `sam`: Segment Anything with a centre point prompt, from a checkpoint you supply
  (`--sam_checkpoint`; optional package `segment-anything`).
Masks already written are skipped (the command resumes), each is written atomically, and a
summary of mask areas per domain closes the run.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from domainbed_align.lib.errors import ConfigError, DataError, DomainBedAlignError
from domainbed_align.lib.misc import atomic_open

MASKS_COMMAND = "python -m domainbed_align.datasets.masks"
METHODS = ("centre", "grabcut", "gradcam", "sam")
EXAMPLE = f"{MASKS_COMMAND} --dataset VLCS --data_dir DATA --out MASKS --method grabcut"


def missing_masks_message(algorithm: str, dataset: str) -> str:
    """The one line a mask-based algorithm on an image folder without --mask_dir fails with."""
    return (f"{algorithm} trains on relevance masks but {dataset} has none; make a mask folder "
            f"with `{MASKS_COMMAND} --dataset {dataset} --data_dir DATA --out MASKS --method grabcut` "
            f"(or centre, gradcam, sam) and pass --mask_dir MASKS")


def require_masks(algorithm_cls, dataset_cls, mask_dir: Optional[str]) -> None:
    """Fail before any data is read when a mask-based algorithm would get no masks."""
    if getattr(algorithm_cls, "NEEDS_MASKS", False) and not dataset_cls.HAS_MASKS and not mask_dir:
        raise ConfigError(missing_masks_message(algorithm_cls.__name__, dataset_cls.__name__))


# ------------------------------------------------------------------ generators
class CentrePrior:
    """Soft Gaussian centred on the image, sigma = `sigma_rel` of each side (no weights)."""

    def __init__(self, sigma_rel: float = 0.25):
        self.sigma_rel = sigma_rel

    def __call__(self, images: List[np.ndarray], labels: List[int]) -> List[np.ndarray]:
        out = []
        for im in images:
            h, w = im.shape[:2]
            yy = (np.arange(h) - (h - 1) / 2) / (self.sigma_rel * h)
            xx = (np.arange(w) - (w - 1) / 2) / (self.sigma_rel * w)
            g = np.exp(-0.5 * (yy[:, None] ** 2 + xx[None, :] ** 2))
            out.append(np.round(255 * g).astype(np.uint8))
        return out


class GrabCut:
    """OpenCV GrabCut from a centred rectangle (`margin` of each side left out), `iters` rounds.

    Runs on a copy whose longer side is at most `max_side` px (GrabCut is slow on big images);
    the binary result is resized back with nearest neighbour. An image GrabCut cannot split
    (e.g. one flat colour) gets the rectangle itself and counts as a fallback.
    """

    def __init__(self, margin: float = 0.1, iters: int = 5, max_side: int = 256):
        try:
            import cv2
        except ImportError:
            raise ConfigError("--method grabcut needs OpenCV: pip install opencv-python-headless "
                              "(or pip install -e \".[masks]\"); --method centre needs nothing") from None
        self.cv2, self.margin, self.iters, self.max_side = cv2, margin, iters, max_side
        self.fallbacks = 0

    def one(self, im: np.ndarray) -> np.ndarray:
        cv2 = self.cv2
        h, w = im.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = cv2.resize(im, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA) if scale < 1 else im
        sh, sw = small.shape[:2]
        x0, y0 = int(self.margin * sw), int(self.margin * sh)
        rect = (x0, y0, max(1, sw - 2 * x0), max(1, sh - 2 * y0))
        mask = np.zeros((sh, sw), np.uint8)
        try:
            cv2.grabCut(np.ascontiguousarray(small[:, :, ::-1]), mask, rect, np.zeros((1, 65)),
                        np.zeros((1, 65)), self.iters, cv2.GC_INIT_WITH_RECT)
            fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        except cv2.error:
            fg = np.zeros((sh, sw), bool)
        if not fg.any():
            self.fallbacks += 1
            fg = np.zeros((sh, sw), bool)
            fg[rect[1]:rect[1] + rect[3], rect[0]:rect[0] + rect[2]] = True
        out = fg.astype(np.uint8) * 255
        return cv2.resize(out, (w, h), interpolation=cv2.INTER_NEAREST) if (sh, sw) != (h, w) else out

    def __call__(self, images, labels):
        return [self.one(im) for im in images]


class RunGradCam:
    """Grad-CAM of the true class from a finished run, min-max, kept where >= `threshold`."""

    def __init__(self, run_dir: str, dataset: str, threshold: float = 0.5, device: Optional[str] = None):
        import torch
        from domainbed_align.algorithms import get_algorithm_class
        from domainbed_align.lib.saved import load_run
        from domainbed_align.datasets.image_folder import _transforms
        if not 0 < threshold < 1:
            raise ConfigError(f"--threshold must be in (0, 1), got {threshold}")
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        saved = load_run(run_dir, "model.pkl", self.device)
        if saved["args"]["dataset"] != dataset:
            raise ConfigError(f"--run_dir {run_dir} trained on {saved['args']['dataset']}, not "
                              f"{dataset}; pass a run of {dataset} (its classes index the masks)")
        hp = dict(saved["model_hparams"])
        hp["pretrained"] = False  # the state dict overwrites every weight
        shape = tuple(saved["model_input_shape"])
        self.algorithm = get_algorithm_class(saved["args"]["algorithm"])(
            shape, saved["model_num_classes"], saved["model_num_domains"], hp)
        self.algorithm.load_state_dict(saved["model_dict"])
        self.algorithm.to(self.device).eval()
        self.transform = _transforms(shape[1], augment=False)
        self.threshold = threshold

    def __call__(self, images, labels):
        from domainbed_align.explain.gradcam import grad_cam, normalize_cam, upsample_cam
        from torchvision import tv_tensors
        torch = self.torch
        x = torch.stack([self.transform(tv_tensors.Image(torch.from_numpy(im).permute(2, 0, 1)))
                         for im in images]).to(self.device)
        y = torch.as_tensor(labels, device=self.device)
        cam, _ = grad_cam(self.algorithm.network, self.algorithm.cam_layer, x, y, relu=True)
        out = []
        for c, im in zip(cam.detach(), images):  # images differ in size: one resize each
            s = normalize_cam(upsample_cam(c[None], im.shape[:2]))[0]
            out.append(((s >= self.threshold).cpu().numpy() * 255).astype(np.uint8))
        return out


class SamCentrePoint:
    """Segment Anything, one positive point at the image centre; of SAM's three candidate masks
    the best-scoring one covering less than `max_area` of the image (else the smallest)."""

    def __init__(self, checkpoint: Optional[str], model_type: str = "vit_h", max_area: float = 0.95,
                 device: Optional[str] = None):
        try:
            from segment_anything import SamPredictor, sam_model_registry
        except ImportError:
            raise ConfigError("--method sam needs the optional package segment-anything "
                              "(pip install segment-anything) and --sam_checkpoint FILE; "
                              "--method grabcut or centre work offline without it") from None
        if not checkpoint or not os.path.isfile(checkpoint):
            raise ConfigError(f"--method sam needs --sam_checkpoint FILE (a SAM {model_type} "
                              f"checkpoint you downloaded); got {checkpoint!r}")
        if model_type not in sam_model_registry:
            raise ConfigError(f"unknown --sam_model_type {model_type!r}; known: {', '.join(sam_model_registry)}")
        import torch
        sam = sam_model_registry[model_type](checkpoint=checkpoint)
        sam.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.predictor = SamPredictor(sam)
        self.max_area = max_area

    def one(self, im: np.ndarray) -> np.ndarray:
        h, w = im.shape[:2]
        self.predictor.set_image(im)
        masks, scores, _ = self.predictor.predict(point_coords=np.array([[w / 2, h / 2]]),
                                                  point_labels=np.array([1]), multimask_output=True)
        masks = np.asarray(masks, dtype=bool)
        areas = masks.reshape(len(masks), -1).mean(axis=1)
        ok = np.flatnonzero(areas < self.max_area)
        best = ok[np.argmax(np.asarray(scores)[ok])] if len(ok) else int(np.argmin(areas))
        return masks[best].astype(np.uint8) * 255

    def __call__(self, images, labels):
        return [self.one(im) for im in images]


def make_generator(a: argparse.Namespace):
    if a.method == "centre":
        return CentrePrior(a.sigma)
    if a.method == "grabcut":
        return GrabCut(a.margin, a.iters)
    if a.method == "gradcam":
        if not a.run_dir:
            raise ConfigError("--method gradcam needs --run_dir, the output folder of a finished "
                              "training run on this dataset (it holds model.pkl)")
        return RunGradCam(a.run_dir, a.dataset, a.threshold)
    return SamCentrePoint(a.sam_checkpoint, a.sam_model_type)


# ------------------------------------------------------------------ the folder
def mask_path(out: str, base: str, image_path: str) -> str:
    """`<out>/<Domain>/<class>/<stem>.png` for `<base>/<Domain>/<class>/<image>` (as --mask_dir reads)."""
    return os.path.join(out, os.path.splitext(os.path.relpath(image_path, base))[0] + ".png")


def read_image(path: str, mode: str = "RGB") -> np.ndarray:
    """(H, W, 3) uint8 for "RGB", (H, W) for "L"; an unreadable file is one clear error."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}; remove or replace the file") from e


def write_mask(path: str, mask: np.ndarray) -> None:
    """8-bit PNG, written to a temp file beside `path` and renamed (never half a file)."""
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_open(path, "wb") as f:
        Image.fromarray(mask, mode="L").save(f, format="PNG")


def mask_area(mask: np.ndarray) -> float:
    """Share of pixels with relevance >= 128 (what the training losses binarise at 0.5)."""
    return float((mask >= 128).mean())


def make_masks(dataset: str, data_dir: str, out: str, generator, batch_size: int = 16,
               progress: bool = True) -> Dict[str, dict]:
    """Write every missing mask; returns per-domain statistics (written, skipped, areas)."""
    from tqdm import tqdm
    from domainbed_align.datasets import get_dataset_class
    dataset_cls = get_dataset_class(dataset)
    if not hasattr(dataset_cls, "DOMAIN_DIRS"):
        raise ConfigError(f"{dataset} is not an image-folder dataset (it has its own masks or "
                          f"none); pass one of the image-folder datasets, e.g. VLCS")
    ds = dataset_cls(data_dir, [], {"data_augmentation": False})  # checks the folder layout
    base = ds.base
    jobs = [(d, env.index.path(i), int(env.index.labels[i]))
            for d, env in zip(ds.domain_dirs, ds.datasets) for i in range(len(env))]
    stats = {d: {"written": 0, "skipped": 0, "areas": []} for d in ds.domain_dirs}
    todo = []
    for d, path, label in jobs:
        target = mask_path(out, base, path)
        if os.path.exists(target):
            stats[d]["skipped"] += 1
            stats[d]["areas"].append(mask_area(read_image(target, "L")))
        else:
            todo.append((d, path, label, target))
    with tqdm(total=len(todo), desc=f"masks ({type(generator).__name__})", disable=None if progress else True,
              unit="img") as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            images = [read_image(path) for _, path, _, _ in chunk]
            masks = generator(images, [label for _, _, label, _ in chunk])
            for (d, _, _, target), im, m in zip(chunk, images, masks):
                assert m.shape == im.shape[:2] and m.dtype == np.uint8, (m.shape, m.dtype)
                write_mask(target, m)
                stats[d]["written"] += 1
                stats[d]["areas"].append(mask_area(m))
            bar.update(len(chunk))
    return stats


def summary(stats: Dict[str, dict]) -> str:
    """Per-domain table: counts, mean/std/min/max mask area, and empty or full masks (those get
    zero explanation weight in training)."""
    lines = [f"{'domain':<16}{'written':>8}{'skipped':>8}{'area mean':>10}{'std':>7}{'min':>7}{'max':>7}"
             f"{'empty':>7}{'full':>6}"]
    for d, s in stats.items():
        a = np.asarray(s["areas"]) if s["areas"] else np.full(1, np.nan)
        lines.append(f"{d:<16}{s['written']:>8}{s['skipped']:>8}{a.mean():>10.3f}{a.std():>7.3f}"
                     f"{a.min():>7.3f}{a.max():>7.3f}{int((a == 0).sum()):>7}{int((a == 1).sum()):>6}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=MASKS_COMMAND, description=__doc__.split("\n")[0],
                                epilog=f"example: {EXAMPLE}")
    p.add_argument("--dataset", required=True, help="image-folder dataset (VLCS, PACS, OfficeHome, "
                                                     "TerraIncognita, DomainNet, DomainFolder)")
    p.add_argument("--data_dir", required=True, help="folder that holds the dataset's folder "
                                                      "(DomainFolder: the tree itself)")
    p.add_argument("--out", required=True, help="mask folder to write (pass it as --mask_dir)")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--sigma", type=float, default=0.25, help="centre: Gaussian sigma / side")
    p.add_argument("--margin", type=float, default=0.1, help="grabcut: border left out of the start box")
    p.add_argument("--iters", type=int, default=5, help="grabcut: iterations")
    p.add_argument("--run_dir", help="gradcam: output folder of a finished run on this dataset")
    p.add_argument("--threshold", type=float, default=0.5, help="gradcam: keep min-max CAM >= this")
    p.add_argument("--sam_checkpoint", help="sam: checkpoint file (e.g. sam_vit_h_4b8939.pth)")
    p.add_argument("--sam_model_type", default="vit_h", help="sam: vit_h, vit_l or vit_b")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        if a.batch_size < 1:
            raise ConfigError(f"--batch_size must be at least 1, got {a.batch_size}")
        generator = make_generator(a)
        stats = make_masks(a.dataset, a.data_dir, a.out, generator, a.batch_size)
    except DomainBedAlignError as e:
        print(f"error: {str(e).strip().splitlines()[-1]}", file=sys.stderr)
        return 2
    print(summary(stats))
    if getattr(generator, "fallbacks", 0):
        print(f"note: {generator.fallbacks} images kept GrabCut's start rectangle (no split found)")
    print(f"mask folder: {a.out}  (train with --mask_dir {a.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
