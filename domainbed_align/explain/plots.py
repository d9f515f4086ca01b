"""Figures of what a trained model looks at: image, Grad-CAM, ground-truth and learned masks.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through `pyplot`, so
nothing is registered in pyplot's global figure manager (no leaks across calls, no display
needed on a compute node) and the figure is freed when the caller drops it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from domainbed_align.explain.gradcam import saliency_map

CORRECT_COLOUR = "#1a7f37"   # green
WRONG_COLOUR = "#cf222e"     # red
CAM_ALPHA = 0.5
PANEL_IN = 1.25              # inches per panel side
FONT_PT = 6.5
MAX_NAME_CHARS = 14


@dataclasses.dataclass
class Explanations:
    """Everything a figure draws, as numpy arrays (one row per image).

    Attributes:
        images: (N, H, W, 3) in [0, 1], ready to display.
        saliency: (N, H, W) in [0, 1], Grad-CAM of the predicted class.
        labels: (N,) true classes.
        preds: (N,) predicted classes.
        gt_masks: (N, H, W) in [0, 1] or None when the dataset has no masks.
        learned_masks: (N, H, W) in [0, 1] or None when the algorithm learns none.
    """

    images: np.ndarray
    saliency: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    gt_masks: Optional[np.ndarray] = None
    learned_masks: Optional[np.ndarray] = None

    @property
    def panels(self) -> list[str]:
        """Panel kinds drawn for each image, in column order."""
        kinds = ["image", "gradcam"]
        if self.gt_masks is not None:
            kinds.append("gt_mask")
        if self.learned_masks is not None:
            kinds.append("learned_mask")
        return kinds


PANEL_TITLES = {"gradcam": "Grad-CAM (pred.)", "gt_mask": "true mask", "learned_mask": "learned mask"}


def minmax_display(x: Tensor) -> Tensor:
    """Per-image min-max of normalised images (B, C, H, W) to [0, 1] (datasets with own stats)."""
    flat = x.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (x - lo) / (hi - lo).clamp_min(1e-8)


def unnormalize(mean: Sequence[float], std: Sequence[float]) -> Callable[[Tensor], Tensor]:
    """Inverse of `Normalize(mean, std)`, clipped to [0, 1] (image folders: ImageNet stats)."""
    def fn(x: Tensor) -> Tensor:
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x * s + m).clamp(0, 1)
    return fn


def _to_hw(maps: Tensor, size: Sequence[int]) -> np.ndarray:
    """(B, 1, h, w) or (B, h, w) maps -> (B, H, W) float numpy at the input size."""
    if maps.dim() == 3:
        maps = maps.unsqueeze(1)
    maps = maps.detach().float()
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)
    return maps[:, 0].clamp(0, 1).cpu().numpy()


def compute_explanations(algorithm, x: Tensor, y: Tensor, m: Optional[Tensor] = None,
                         to_display: Callable[[Tensor], Tensor] = minmax_display) -> Explanations:
    """Run the model on a batch and collect what `explanation_figure` draws.

    Args:
        algorithm: has `.network` (x -> logits), `.cam_layer` and `.learned_mask(x)`
            ((B, 1, H, W) in [0, 1] or None).
        x: (B, C, H, W) normalised images on the algorithm's device.
        y: (B,) true classes.
        m: (B, 1, H, W) ground-truth relevance masks, or None.
        to_display: maps normalised images to (B, 3, H, W) in [0, 1].
    """
    was_training = algorithm.training if hasattr(algorithm, "training") else None
    if was_training:
        algorithm.eval()
    try:
        s, logits = saliency_map(algorithm.network, algorithm.cam_layer, x)  # s: (B, H, W)
        with torch.no_grad():
            learned = algorithm.learned_mask(x)  # (B, 1, H, W) in [0, 1] or None
    finally:
        if was_training:
            algorithm.train()
    size = x.shape[-2:]
    images = to_display(x.detach()).clamp(0, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return Explanations(
        images=images.permute(0, 2, 3, 1).cpu().numpy(),
        saliency=s.cpu().numpy(),
        labels=torch.as_tensor(y).cpu().numpy(),
        preds=logits.argmax(dim=1).cpu().numpy(),
        gt_masks=None if m is None else _to_hw(m, size),
        learned_masks=None if learned is None else _to_hw(learned, size),
    )


def _short(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS - 1] + "…"


def _blocks_per_row(n_images: int, n_panels: int) -> int:
    """Image blocks side by side so the grid is roughly square (n=16, 4 panels: 2 blocks)."""
    return max(1, min(n_images, round(math.sqrt(n_images / n_panels))))


def draw_explanations(ex: Explanations, class_names: Optional[Sequence[str]] = None,
                      title: str = ""):
    """Grid of image blocks; each block is one image's panels side by side.

    The image panel is titled `true -> pred` in green when right and red (with a cross) when
    wrong; the other panels are named in the first row. Only panels that exist are created, so
    `len(fig.axes) == n_images * len(ex.panels)`.

    Returns:
        a `matplotlib.figure.Figure` (Agg canvas, not known to pyplot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.gridspec import GridSpec

    n = len(ex.labels)
    if n < 1:
        raise ValueError("draw_explanations needs at least one image")
    kinds = ex.panels
    P = len(kinds)
    B = _blocks_per_row(n, P)
    rows = math.ceil(n / B)
    gap = 0.2  # a narrow empty column between blocks, so blocks read as units
    ratios = []
    for b in range(B):
        ratios += [1.0] * P + ([gap] if b < B - 1 else [])
    width = PANEL_IN * sum(ratios) + 0.3
    height = PANEL_IN * 1.18 * rows + 0.55
    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    top = 1 - 0.5 / height
    gs = GridSpec(rows, len(ratios), figure=fig, width_ratios=ratios, left=0.1 / width,
                  right=1 - 0.1 / width, bottom=0.05 / height, top=top, wspace=0.05, hspace=0.25)
    names = [str(c) for c in class_names] if class_names is not None else None

    def name(c) -> str:
        c = int(c)
        return _short(names[c]) if names is not None and 0 <= c < len(names) else str(c)

    for i in range(n):
        r, b = divmod(i, B)
        for p, kind in enumerate(kinds):
            ax = fig.add_subplot(gs[r, b * (P + 1) + p])
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_linewidth(0.4)
            if kind == "image":
                ax.imshow(ex.images[i], interpolation="nearest")
                ok = int(ex.labels[i]) == int(ex.preds[i])
                text = (f"{name(ex.labels[i])} ✓" if ok
                        else f"{name(ex.labels[i])} → {name(ex.preds[i])} ✗")
                ax.set_title(text, fontsize=FONT_PT, color=CORRECT_COLOUR if ok else WRONG_COLOUR,
                             pad=2, fontweight="bold")
                continue
            if kind == "gradcam":
                ax.imshow(ex.images[i], interpolation="nearest")
                ax.imshow(ex.saliency[i], cmap="jet", alpha=CAM_ALPHA, vmin=0, vmax=1,
                          interpolation="bilinear")
            elif kind == "gt_mask":
                ax.imshow(ex.gt_masks[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            elif kind == "learned_mask":
                ax.imshow(ex.learned_masks[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if r == 0:
                ax.set_title(PANEL_TITLES[kind], fontsize=FONT_PT, pad=2, color="#444444")
    right = int((ex.labels == ex.preds).sum())
    legend = f"title: true class ✓ / true → predicted ✗;  {right}/{n} correct"
    fig.suptitle(f"{title}\n{legend}" if title else legend, fontsize=FONT_PT + 1.5,
                 y=1 - 0.04 / height, va="top")
    return fig


def explanation_figure(algorithm, x: Tensor, y: Tensor, m: Optional[Tensor] = None,
                       class_names: Optional[Sequence[str]] = None, title: str = "",
                       to_display: Callable[[Tensor], Tensor] = minmax_display):
    """`compute_explanations` then `draw_explanations`: the figure for a batch.

    Args:
        algorithm: a DomainBed-style algorithm (`.network`, `.cam_layer`, `.learned_mask`).
        x, y, m: images (B, C, H, W), labels (B,), ground-truth masks (B, 1, H, W) or None.
        class_names: label -> name; None shows the class index.
        title: first line of the suptitle (algorithm, dataset, domain, step).
        to_display: normalised images -> (B, 3, H, W) in [0, 1].
    """
    ex = compute_explanations(algorithm, x, y, m, to_display)
    return draw_explanations(ex, class_names, title)


def save_figure(fig, path: str, dpi: Optional[int] = None) -> None:
    """Write a PNG atomically (a reader never sees half a file)."""
    from domainbed_align.lib.misc import atomic_open
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
