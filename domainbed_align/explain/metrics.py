"""How good an explanation is (method.md section 4): faithfulness and localisation.

Faithfulness perturbs pixels in saliency order and watches the probability of the explained
class (the prediction on the clean image):
- comprehensiveness / sufficiency, AOPC over k% (ERASER, DeYoung et al. ACL 2020,
  https://arxiv.org/abs/1911.03429), with a seeded random map as control;
- deletion / insertion AUC (RISE, Petsiuk et al. BMVC 2018, https://arxiv.org/abs/1806.07421).
Deletion at fraction f is exactly the comprehensiveness input at k = f and insertion at f the
sufficiency input, so the fraction grid contains every k and one set of batched no-grad forwards
serves all four numbers. This runs at every checkpoint, so nothing loops over samples.

Pixel ranking: a stable ascending sort of -s over the row-major flattened map, so equal saliency
values are ranked by pixel index (top-left first). The same ranking picks the pointing-game
pixel, the top-k% and the top-q% sets, so every number is deterministic, ties included.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from domainbed_align.explain.gradcam import saliency_map

DEFAULT_KS = (1, 5, 10, 20, 50)
# Fractions of pixels removed (deletion) or kept (insertion) for the RISE curves; the k% of
# comprehensiveness / sufficiency are added to it when missing.
# The grid is the ks plus the end points: every checkpoint of every run pays 2 forwards per
# interior point, and the curves change fastest at small fractions, where the points are dense.
DEFAULT_FRACTIONS = (0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0)

Fill = float | str


def rank_pixels(s: Tensor) -> Tensor:
    """Rank of every pixel in descending saliency, ties by pixel index; (B, H, W) -> (B, H*W).

    rank[b, p] = 0 for the most salient pixel, so `rank < n` is the top-n set.
    """
    flat = s.flatten(1)  # (B, N)
    order = torch.sort(-flat, dim=1, stable=True).indices  # (B, N) pixel indices, best first
    # int32 ranks halve the memory of the (2, B, H*W) table at 224 px
    rank = torch.empty(order.shape, dtype=torch.int32, device=s.device)
    positions = torch.arange(flat.shape[1], dtype=torch.int32, device=s.device).expand_as(order)
    rank.scatter_(1, order, positions)
    return rank


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with replicate padding (works for any image size)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    C = x.shape[1]
    kx = g.view(1, 1, 1, -1).repeat(C, 1, 1, 1)  # (C, 1, 1, K)
    ky = g.view(1, 1, -1, 1).repeat(C, 1, 1, 1)  # (C, 1, K, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kx, groups=C)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), ky, groups=C)


def make_fill(x: Tensor, fill: Fill = 0.0, blur_sigma_rel: float = 0.1) -> Tensor:
    """Values that replace removed pixels: a constant in normalised space (0 = the mean colour)
    or "blur", a Gaussian-blurred copy of x with sigma = blur_sigma_rel * max(H, W).

    Returns a tensor broadcastable to x: (1, 1, 1, 1) for a constant, (B, C, H, W) for blur.
    """
    if isinstance(fill, str):
        if fill != "blur":
            raise ValueError(f"unknown fill {fill!r}; use a float (normalised value) or 'blur'")
        return gaussian_blur(x, sigma=blur_sigma_rel * max(x.shape[-2:]))
    return torch.full((1, 1, 1, 1), float(fill), dtype=x.dtype, device=x.device)


def _pixel_count(fraction: float, num_pixels: int) -> int:
    """Pixels in a fraction of the image, rounded half up (1% of 784 px is 8 px)."""
    return int(math.floor(fraction * num_pixels + 0.5))


@torch.no_grad()
def _class_probs(model: nn.Module, x: Tensor, fill_values: Tensor, ranks: Tensor,
                 sources: Tensor, counts: Tensor, keep_top: Tensor, cls: Tensor,
                 chunk_size: int) -> Tensor:
    """Probability of class `cls[b]` on V perturbed copies of every sample, in chunks.

    Variant v of sample b keeps pixel p iff (ranks[sources[v], b, p] < counts[v, b]) == keep_top[v];
    the other pixels take the fill value. Images are built chunk by chunk so memory stays at
    chunk_size images whatever V * B is.

    Returns:
        probs (V, B).
    """
    B, C, H, W = x.shape
    V = len(counts)
    fill_b = fill_values.expand(B, C, H, W)  # a view; indexing below copies only a chunk
    out = torch.empty(V * B, device=x.device)
    for start in range(0, V * B, chunk_size):
        idx = torch.arange(start, min(start + chunk_size, V * B), device=x.device)
        v, b = idx // B, idx % B
        r = ranks[sources[v], b]  # (n, N)
        keep = (r < counts[v, b, None]) == keep_top[v, None]  # (n, N)
        keep = keep.view(-1, 1, H, W)
        xp = torch.where(keep, x[b], fill_b[b])  # (n, C, H, W)
        p = model(xp).float().softmax(dim=1)  # (n, K)
        out[start:start + len(idx)] = p.gather(1, cls[b].view(-1, 1)).squeeze(1)
    return out.view(V, B)


def faithfulness(model: nn.Module, s: Tensor, x: Tensor, fill: Fill = 0.0,
                 ks: Sequence[float] = DEFAULT_KS,
                 fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
                 chunk_size: int = 1024, clean_logits: Tensor | None = None,
                 blur_sigma_rel: float = 0.1) -> dict[str, Tensor]:
    """Per-sample comprehensiveness / sufficiency (AOPC over ks, with random control) and
    deletion / insertion AUC.

    Args:
        model: x -> logits; call it in eval mode.
        s: saliency (B, H, W) in [0, 1].
        x: images (B, C, H, W), normalised.
        fill: constant value in normalised space or "blur".
        ks: percentages of pixels for comprehensiveness / sufficiency.
        fractions: RISE grid in [0, 1]; the ks / 100 are merged in so forwards are shared.
        seed: seeds the random control map (a torch.Generator, so reruns agree).
        chunk_size: images per no-grad forward.
        clean_logits: logits of x if already computed (saves a forward).
        blur_sigma_rel: blur sigma as a fraction of the image side, for fill="blur".

    Returns:
        dict of (B,) tensors: comp, suff, comp_rand, suff_rand, del, ins; plus curves
        del_curve, ins_curve (B, F) and fractions (F,).
    """
    B, C, H, W = x.shape
    N = H * W
    if s.shape != (B, H, W):
        raise ValueError(f"saliency must be (B, H, W) = {(B, H, W)}, got {tuple(s.shape)}")
    if clean_logits is None:
        with torch.no_grad():
            clean_logits = model(x)
    clean_logits = clean_logits.detach()
    cls = clean_logits.argmax(dim=1)  # (B,) explained class = prediction on clean x
    p_clean = clean_logits.float().softmax(dim=1).gather(1, cls.view(-1, 1)).squeeze(1)  # (B,)

    k_fracs = [k / 100 for k in ks]
    if not all(0.0 <= f <= 1.0 for f in [*fractions, *k_fracs]):
        raise ValueError(f"fractions must lie in [0, 1] and ks in [0, 100]; got "
                         f"fractions={list(fractions)}, ks={list(ks)}")
    grid = sorted(set(float(f) for f in fractions) | set(k_fracs) | {0.0, 1.0})
    inner = [f for f in grid if 0.0 < f < 1.0]

    gen = torch.Generator().manual_seed(seed)
    s_rand = torch.rand(B, H, W, generator=gen).to(x.device)
    ranks = torch.stack([rank_pixels(s), rank_pixels(s_rand)])  # (2, B, N)

    # Variants: deletion and insertion at the inner fractions, the all-filled image (deletion
    # at 1 == insertion at 0), then the random map. Clean x is deletion at 0.
    # The random control is an AOPC *estimate*: each sample gets one k drawn uniformly from ks
    # (one deletion and one insertion forward instead of 2 * len(ks)); averaged over the
    # samples of a split it is unbiased for the mean over k, at a fifth of the cost.
    SAL, RAND = 0, 1
    k_counts = torch.tensor([_pixel_count(f, N) for f in k_fracs])
    rand_counts = k_counts[torch.randint(len(ks), (2, B), generator=gen)]  # (2, B)
    variants = ([(SAL, _pixel_count(f, N), False) for f in inner]
                + [(SAL, _pixel_count(f, N), True) for f in inner]
                + [(SAL, 0, True)])
    dev = x.device
    sources = torch.tensor([v[0] for v in variants] + [RAND, RAND], device=dev)
    counts = torch.cat([torch.tensor([v[1] for v in variants]).view(-1, 1).expand(-1, B),
                        rand_counts]).to(dev)  # (V, B)
    keep_top = torch.tensor([v[2] for v in variants] + [False, True], device=dev)
    fill_values = make_fill(x, fill, blur_sigma_rel=blur_sigma_rel)
    probs = _class_probs(model, x, fill_values, ranks, sources, counts, keep_top, cls,
                         chunk_size)  # (V, B)

    n_in = len(inner)
    p_del_inner, p_ins_inner = probs[:n_in], probs[n_in:2 * n_in]
    p_filled = probs[2 * n_in]
    p_rand_del, p_rand_ins = probs[2 * n_in + 1], probs[2 * n_in + 2]
    del_curve = torch.cat([p_clean[None], p_del_inner, p_filled[None]]).T  # (B, F)
    ins_curve = torch.cat([p_filled[None], p_ins_inner, p_clean[None]]).T  # (B, F)
    grid_t = torch.tensor(grid, device=dev, dtype=del_curve.dtype)

    col = [grid.index(f) for f in k_fracs]
    return {
        "comp": (p_clean[:, None] - del_curve[:, col]).mean(dim=1),
        "suff": (p_clean[:, None] - ins_curve[:, col]).mean(dim=1),
        "comp_rand": p_clean - p_rand_del,
        "suff_rand": p_clean - p_rand_ins,
        # grid spans [0, 1], so the trapezoid area is already normalised
        "del": torch.trapezoid(del_curve, grid_t, dim=1),
        "ins": torch.trapezoid(ins_curve, grid_t, dim=1),
        "del_curve": del_curve,
        "ins_curve": ins_curve,
        "fractions": grid_t,
    }


def localization(s: Tensor, masks: Tensor, mask_threshold: float = 0.5,
                 eps: float = 1e-8) -> dict[str, Tensor]:
    """Per-sample pointing game, energy pointing game and top-q% IoU against ground truth.

    The mask is binarised at `mask_threshold` (>=). Samples with an empty mask get NaN, so a
    nanmean skips them. A flat saliency map (max == min) points nowhere: its pointing game is 0
    rather than the tie-break pixel. Energy pointing game = sum(s * m) / sum(s) (Wang et al.
    Score-CAM, CVPRW 2020). IoU takes the top-q saliency pixels, q = the mask's pixel count.

    Args:
        s: saliency (B, H, W) in [0, 1].
        masks: (B, 1, H, W) or (B, H, W) in [0, 1].

    Returns:
        dict of (B,) float tensors pg, epg, iou (NaN where the mask is empty).
    """
    if masks.dim() == 4:
        masks = masks[:, 0]
    if masks.shape != s.shape:
        raise ValueError(f"mask shape {tuple(masks.shape)} does not match saliency "
                         f"{tuple(s.shape)}; resize masks to the input size")
    m = (masks >= mask_threshold).flatten(1)  # (B, N) bool
    sf = s.flatten(1).float()  # (B, N)
    area = m.sum(dim=1)  # (B,)
    rank = rank_pixels(s)  # (B, N)

    top1 = (rank == 0)
    flat_map = sf.max(dim=1).values == sf.min(dim=1).values
    pg = (top1 & m).any(dim=1) & ~flat_map
    epg = (sf * m).sum(dim=1) / (sf.sum(dim=1) + eps)
    top_q = rank < area[:, None]
    iou = (top_q & m).sum(dim=1) / (top_q | m).sum(dim=1).clamp(min=1)

    empty = area == 0
    nan = torch.tensor(float("nan"), device=s.device)
    return {k: torch.where(empty, nan, v.float()) for k, v in
            {"pg": pg, "epg": epg, "iou": iou}.items()}


def prediction_auc(probs: np.ndarray | Tensor, y: np.ndarray | Tensor,
                   num_classes: int) -> float:
    """Macro one-vs-rest ROC-AUC from softmax probabilities (B, K).

    A small evaluation split may miss some classes; then the average runs over the classes
    present in y (their one-vs-rest AUC is defined), NaN if fewer than two are present. With
    every class present this equals sklearn's roc_auc_score(multi_class="ovr", average="macro").
    """
    from sklearn.metrics import roc_auc_score

    probs = probs.detach().cpu().numpy() if isinstance(probs, Tensor) else np.asarray(probs)
    y = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"probs must be (B, {num_classes}), got {probs.shape}")
    present = [c for c in range(num_classes) if (y == c).any()]
    if len(present) < 2:
        return float("nan")
    return float(np.mean([roc_auc_score(y == c, probs[:, c]) for c in present]))


def _set_modes(model: nn.Module, modes: list[bool]) -> None:
    for module, mode in zip(model.modules(), modes):
        module.training = mode


def explanation_metrics(model: nn.Module, layer: nn.Module, x: Tensor, y: Tensor,
                        masks: Tensor | None = None, fill: Fill = 0.0,
                        ks: Sequence[float] = DEFAULT_KS,
                        fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
                        chunk_size: int = 1024) -> dict[str, float]:
    """All explanation numbers for one evaluation batch; what the trainer records.

    Saliency is Grad-CAM of the *predicted* class at `layer` (method.md section 4), so y only
    checks the batch size. The model is evaluated in eval mode and every submodule's mode is
    restored afterwards; parameters' .grad are untouched.

    Args:
        model: x -> logits.
        layer: the Grad-CAM layer (submodule of model).
        x: images (B, C, H, W), normalised.
        y: labels (B,).
        masks: optional ground truth (B, 1, H, W) or (B, H, W) in [0, 1].
        fill: removed-pixel value in normalised space, or "blur".
        ks: percentages for comprehensiveness / sufficiency.
        fractions: RISE grid; cost is B * (2 * inner grid points + 1 + 2 * len(ks)) forwards
            (33 per image by default), so a coarser grid is the knob for speed.
        seed: seed of the random control map.
        chunk_size: images per forward, for the saliency and the perturbations.

    Returns:
        comp, suff, comp_rand, suff_rand, del, ins and, with masks, pg, epg, iou (NaN when
        every mask is empty), as Python floats averaged over the batch.
    """
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        parts = [saliency_map(model, layer, x[i:i + chunk_size])
                 for i in range(0, x.shape[0], chunk_size)]
        s = torch.cat([p[0] for p in parts])  # (B, H, W)
        logits = torch.cat([p[1] for p in parts])  # (B, K)
        per_sample = faithfulness(model, s, x, fill=fill, ks=ks, fractions=fractions, seed=seed,
                                  chunk_size=chunk_size, clean_logits=logits)
    finally:
        _set_modes(model, modes)
    keys = ("comp", "suff", "comp_rand", "suff_rand", "del", "ins")
    out = {k: float(per_sample[k].mean()) for k in keys}
    if masks is not None:
        loc = localization(s, masks.to(s.device))
        out.update({k: float(v.nanmean()) for k, v in loc.items()})
    return out
