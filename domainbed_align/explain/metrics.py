"""How good an explanation is (method.md section 4): faithfulness and localisation.

Faithfulness perturbs pixels in the order of the saliency of the *predicted* class and watches
the probability of that class (the prediction on the clean image):
- comprehensiveness / sufficiency, AOPC over k% (ERASER, DeYoung et al. ACL 2020,
  https://arxiv.org/abs/1911.03429): the sum over k in ks divided by |ks| + 1 (ERASER's k = 0
  bin, whose term is 0), not clipped; a seeded random map is the control;
- deletion / insertion AUC (RISE, Petsiuk et al. BMVC 2018, https://arxiv.org/abs/1806.07421):
  deletion goes from the image towards the fill, insertion from a blurred copy towards the image.
Deletion at fraction f is exactly the comprehensiveness input at k = f, so the two share
forwards; sufficiency (rest = fill) and insertion (rest = blurred copy) differ in what replaces
the other pixels and do not. Identical perturbed images are forwarded once, and nothing loops
over samples: this runs at every checkpoint.

Localisation (pointing game, energy pointing game, top-q% IoU) uses the Grad-CAM of the
*ground-truth* class, as Zhang et al. do for the pointing game: the mask says where the evidence
for the labelled class is, whatever the model predicted.

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

from domainbed_align.explain.gradcam import grad_cam, normalize_cam, upsample_cam
from domainbed_align.lib.errors import ConfigError

DEFAULT_KS = (1, 5, 10, 20, 50)
# Fractions of pixels removed (deletion) or inserted (insertion) for the RISE curves; 0 and 1
# are always added. The default grid is the ks plus the end points: every checkpoint of every
# run pays 2 forwards per interior point, and the curves change fastest at small fractions.
DEFAULT_FRACTIONS = (0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
# Zhang et al.'s pointing-game tolerance: 15 px on 224 px inputs.
PG_TOLERANCE_PX224 = 15.0

Fill = float | str


def metric_grid(points: int = 0) -> tuple[float, ...]:
    """The RISE fraction grid: DEFAULT_FRACTIONS for 0, else `points` evenly spaced in [0, 1]."""
    if points == 0:
        return DEFAULT_FRACTIONS
    if not isinstance(points, int) or points < 2:
        raise ConfigError(f"explain_grid_points must be 0 (the default grid) or an integer >= 2, "
                          f"got {points!r}")
    return tuple(i / (points - 1) for i in range(points))


def pg_tolerance_px(tolerance_px224: float, height: int, width: int) -> float:
    """Pointing-game tolerance in pixels of an H x W input: scaled by the shorter side / 224
    (torchvision's Resize(224) sets the shorter side), so 15 px at 224 is 1.875 px at 28."""
    return float(tolerance_px224) * min(height, width) / 224


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
def _class_probs(model: nn.Module, x: Tensor, backgrounds: Sequence[Tensor], ranks: Tensor,
                 sources: Tensor, counts: Tensor, keep_top: Tensor, background: Tensor,
                 cls: Tensor, chunk_size: int) -> Tensor:
    """Probability of class `cls[b]` on V perturbed copies of every sample, in chunks.

    Variant v of sample b keeps pixel p iff (ranks[sources[v], b, p] < counts[v, b]) == keep_top[v];
    the other pixels come from backgrounds[background[v]] (each broadcastable to x). Images are
    built chunk by chunk so memory stays at chunk_size images whatever V * B is.

    Returns:
        probs (V, B).
    """
    B, C, H, W = x.shape
    V = len(counts)
    bgs = [bg.expand(B, C, H, W) for bg in backgrounds]  # views; indexing copies only a chunk
    out = torch.empty(V * B, device=x.device)
    for start in range(0, V * B, chunk_size):
        idx = torch.arange(start, min(start + chunk_size, V * B), device=x.device)
        v, b = idx // B, idx % B
        r = ranks[sources[v], b]  # (n, N)
        keep = (r < counts[v, b, None]) == keep_top[v, None]  # (n, N)
        keep = keep.view(-1, 1, H, W)
        bg = bgs[0][b]
        for j in range(1, len(bgs)):
            bg = torch.where((background[v] == j).view(-1, 1, 1, 1), bgs[j][b], bg)
        xp = torch.where(keep, x[b], bg)  # (n, C, H, W)
        p = model(xp).float().softmax(dim=1)  # (n, K)
        out[start:start + len(idx)] = p.gather(1, cls[b].view(-1, 1)).squeeze(1)
    return out.view(V, B)


def faithfulness(model: nn.Module, s: Tensor, x: Tensor, fill: Fill = 0.0,
                 ks: Sequence[float] = DEFAULT_KS,
                 fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
                 chunk_size: int = 1024, clean_logits: Tensor | None = None,
                 blur_sigma_rel: float = 0.1,
                 insertion_start: Tensor | None = None) -> dict[str, Tensor]:
    """Per-sample comprehensiveness / sufficiency (AOPC over ks, with random control) and
    deletion / insertion AUC, all for the class predicted on x.

    comp = sum_k (p(x) - p(x without its top-k%)) / (len(ks) + 1), removed pixels = fill;
    suff = sum_k (p(x) - p(top-k% of x, rest = fill)) / (len(ks) + 1);
    del / ins = trapezoid area under p over the grid (0 and 1 added), deletion from x towards
    the fill, insertion from `insertion_start` (a blurred copy of x) towards x. Pixel counts are
    fraction * H * W rounded half up (`_pixel_count`). The insertion start is the blur of
    fill="blur" (sigma 0.1 x the longer side): RISE's own kernel (11 x 11, sigma 5 at 224 px)
    scaled to 28 px is under a pixel wide and would leave a digit readable.

    Forwards per image: one per distinct perturbed image, i.e. with the defaults 5 deletion
    (= comprehensiveness) + 5 sufficiency + 5 insertion interior points, the all-fill and the
    blurred image, and 2 for the random control: 19 (13 when fill is "blur", where sufficiency
    and insertion coincide).

    Args:
        model: x -> logits; call it in eval mode.
        s: saliency (B, H, W); only its per-sample pixel order matters.
        x: images (B, C, H, W), normalised.
        fill: constant value in normalised space or "blur".
        ks: percentages in (0, 100] for comprehensiveness / sufficiency.
        fractions: RISE grid in [0, 1] (0 and 1 are added); see `metric_grid`.
        seed: seeds the random control map (a torch.Generator, so reruns agree).
        chunk_size: images per no-grad forward.
        clean_logits: logits of x if already computed (saves a forward).
        blur_sigma_rel: sigma of the Gaussian blur (fill "blur" and the insertion start) as a
            fraction of the longer image side.
        insertion_start: (B, C, H, W) image insertion starts from; default the blurred x.

    Returns:
        dict of (B,) tensors: comp, suff, comp_rand, suff_rand, del, ins; plus curves
        del_curve, ins_curve (B, F) and fractions (F,).
    """
    B, C, H, W = x.shape
    N = H * W
    if s.shape != (B, H, W):
        raise ValueError(f"saliency must be (B, H, W) = {(B, H, W)}, got {tuple(s.shape)}")
    if not all(0.0 <= f <= 1.0 for f in fractions) or not all(0 < k <= 100 for k in ks) or not ks:
        raise ConfigError(f"fractions must lie in [0, 1] and ks in (0, 100] (k = 0 is implicit); "
                          f"got fractions={list(fractions)}, ks={list(ks)}")
    if clean_logits is None:
        with torch.no_grad():
            clean_logits = model(x)
    clean_logits = clean_logits.detach()
    cls = clean_logits.argmax(dim=1)  # (B,) explained class = prediction on clean x
    p_clean = clean_logits.float().softmax(dim=1).gather(1, cls.view(-1, 1)).squeeze(1)  # (B,)

    grid = sorted(set(float(f) for f in fractions) | {0.0, 1.0})
    k_counts = [_pixel_count(k / 100, N) for k in ks]
    gen = torch.Generator().manual_seed(seed)
    s_rand = torch.rand(B, H, W, generator=gen).to(x.device)
    ranks = torch.stack([rank_pixels(s), rank_pixels(s_rand)])  # (2, B, N)
    if insertion_start is None:
        insertion_start = (make_fill(x, "blur", blur_sigma_rel) if fill != "blur"
                           else None)  # with a blur fill, the fill is the blurred copy
    fill_values = make_fill(x, fill, blur_sigma_rel=blur_sigma_rel)
    FILL, START = 0, 1
    backgrounds = [fill_values] + ([insertion_start] if insertion_start is not None else [])
    start_bg = START if insertion_start is not None else FILL

    # Each perturbed image is (saliency source, pixel count, keep the top pixels?, background).
    # Removing none or keeping all is x itself (p_clean, no forward); keeping none or removing
    # all is the plain background, whatever the ranking.
    SAL, RAND = 0, 1
    CLEAN = None

    def key(count: int, keep_top: bool, background: int):
        if count == (N if keep_top else 0):
            return CLEAN
        if count == (0 if keep_top else N):
            return (SAL, 0, True, background)
        return (SAL, count, keep_top, background)

    del_keys = [key(_pixel_count(f, N), False, FILL) for f in grid]
    ins_keys = [key(_pixel_count(f, N), True, start_bg) for f in grid]
    comp_keys = [key(n, False, FILL) for n in k_counts]
    suff_keys = [key(n, True, FILL) for n in k_counts]
    rows: dict = {}
    for k in del_keys + ins_keys + comp_keys + suff_keys:
        if k is not CLEAN:
            rows.setdefault(k, len(rows))
    variants = list(rows)
    # The random control is an AOPC *estimate*: each sample gets one k drawn uniformly from ks
    # (one removal and one keep-only forward instead of 2 * len(ks)); averaged over the samples
    # of a split it is unbiased for the AOPC of the random map, at a fifth of the cost.
    rand_counts = torch.tensor(k_counts)[torch.randint(len(ks), (2, B), generator=gen)]  # (2, B)
    dev = x.device
    sources = torch.tensor([v[0] for v in variants] + [RAND, RAND], device=dev)
    counts = torch.cat([torch.tensor([v[1] for v in variants], dtype=torch.long).view(-1, 1)
                        .expand(-1, B), rand_counts]).to(dev)  # (V, B)
    keep_top = torch.tensor([v[2] for v in variants] + [False, True], device=dev)
    background = torch.tensor([v[3] for v in variants] + [FILL, FILL], device=dev)
    probs = _class_probs(model, x, backgrounds, ranks, sources, counts, keep_top, background,
                         cls, chunk_size)  # (V, B)

    def curve(keys):  # (B, len(keys))
        return torch.stack([p_clean if k is CLEAN else probs[rows[k]] for k in keys], dim=1)

    del_curve, ins_curve = curve(del_keys), curve(ins_keys)
    grid_t = torch.tensor(grid, device=dev, dtype=del_curve.dtype)
    bins = len(ks) + 1  # ERASER's |B| + 1: the k = 0 bin adds a zero term
    return {
        "comp": (p_clean[:, None] - curve(comp_keys)).sum(dim=1) / bins,
        "suff": (p_clean[:, None] - curve(suff_keys)).sum(dim=1) / bins,
        # one drawn k estimates the mean over ks; len(ks) / bins makes it the AOPC
        "comp_rand": (p_clean - probs[len(variants)]) * len(ks) / bins,
        "suff_rand": (p_clean - probs[len(variants) + 1]) * len(ks) / bins,
        # grid spans [0, 1], so the trapezoid area is already normalised
        "del": torch.trapezoid(del_curve, grid_t, dim=1),
        "ins": torch.trapezoid(ins_curve, grid_t, dim=1),
        "del_curve": del_curve,
        "ins_curve": ins_curve,
        "fractions": grid_t,
    }


def localization(s: Tensor, masks: Tensor, mask_threshold: float = 0.5, eps: float = 1e-8,
                 tolerance_px: float = 0.0) -> dict[str, Tensor]:
    """Per-sample pointing game, energy pointing game and top-q% IoU against ground truth.

    s is a non-negative map; pass the ReLU'd Grad-CAM *before* min-max, since the energy share
    changes under min-max whenever the map's minimum is above 0 (the other two depend only on
    the pixel order). The mask is binarised at `mask_threshold` (>=). Samples with an empty
    mask get NaN, so a nanmean skips them.
    - pg: the top-ranked pixel (the maximum, ties by pixel index) is a hit when some mask pixel
      lies at Euclidean distance < tolerance_px from it (TorchRay's acceptance disc), or it is
      inside the mask itself (so tolerance 0 means "inside"). A flat map (max == min) points
      nowhere: 0.
    - epg: sum(s * m) / sum(s) (Wang et al. Score-CAM, CVPRW 2020); 0 for an all-zero map.
    - iou: IoU of the top-q pixels with the mask, q = the mask's pixel count.

    Args:
        s: saliency (B, H, W), >= 0.
        masks: (B, 1, H, W) or (B, H, W) in [0, 1].
        tolerance_px: pointing-game tolerance in pixels (see `pg_tolerance_px`).

    Returns:
        dict of (B,) float tensors pg, epg, iou (NaN where the mask is empty).
    """
    if masks.dim() == 4:
        masks = masks[:, 0]
    if masks.shape != s.shape:
        raise ValueError(f"mask shape {tuple(masks.shape)} does not match saliency "
                         f"{tuple(s.shape)}; resize masks to the input size")
    if bool((s < 0).any()):
        raise ValueError("localization needs a non-negative map (ReLU the Grad-CAM first)")
    B, H, W = s.shape
    m = (masks >= mask_threshold).flatten(1)  # (B, N) bool
    sf = s.flatten(1).float()  # (B, N)
    area = m.sum(dim=1)  # (B,)
    rank = rank_pixels(s)  # (B, N)

    top1 = rank.argmin(dim=1)  # (B,) pixel index of the maximum
    rows = torch.arange(H, device=s.device).repeat_interleave(W)  # (N,) row of every pixel
    cols = torch.arange(W, device=s.device).repeat(H)
    d2 = (rows[None] - (top1 // W)[:, None]) ** 2 + (cols[None] - (top1 % W)[:, None]) ** 2
    accept = (d2.double() < float(tolerance_px) ** 2) | (d2 == 0)  # (B, N)
    flat_map = sf.max(dim=1).values == sf.min(dim=1).values
    pg = (accept & m).any(dim=1) & ~flat_map
    epg = (sf * m).sum(dim=1) / (sf.sum(dim=1) + eps)
    top_q = rank < area[:, None]
    iou = (top_q & m).sum(dim=1) / (top_q | m).sum(dim=1).clamp(min=1)

    empty = area == 0
    nan = torch.tensor(float("nan"), device=s.device)
    return {k: torch.where(empty, nan, v.float()) for k, v in
            {"pg": pg, "epg": epg, "iou": iou}.items()}


def region_densities(s: Tensor, strokes: Tensor, cue: Tensor | None = None) -> dict[str, float]:
    """Where a non-negative map puts its mass: per region, share of mass / share of area.

    Regions (pooled over the batch): `strokes` (the ground-truth mask, >= 0.5), `cue` (the
    (H, W) cue region minus strokes) and `background` (the rest). 1 means the map is uniform
    over the region, above 1 that it concentrates there; NaN for an empty region or a map
    with no mass. Answers "does the mask/CAM sit on the evidence or on the shortcut?", each
    region judged relative to its size (a 4x4 patch is 2% of a 28x28 image).
    """
    if strokes.dim() == 4:
        strokes = strokes[:, 0]
    if s.dim() == 4:
        s = s[:, 0]
    on = strokes >= 0.5
    cue_px = (cue.to(on.device).bool()[None] & ~on) if cue is not None else torch.zeros_like(on)
    regions = {"strokes": on, "cue": cue_px, "background": ~on & ~cue_px}
    s = s.double()
    total_mass, total_area = s.sum(), float(on.numel())
    out = {}
    for name, region in regions.items():
        area = float(region.sum())
        if area == 0 or float(total_mass) <= 0:
            out[name] = float("nan")
        else:
            out[name] = float((s * region).sum() / total_mass) / (area / total_area)
    return out


def class_mean(values: Tensor, labels: Tensor) -> float:
    """Mean over classes of the per-class mean of `values` (NaNs skipped); classes with no
    finite value (absent, or every mask empty) are left out. NaN when none is left."""
    values, labels = values.detach().cpu().double(), labels.detach().cpu()
    per_class = [values[labels == c].nanmean() for c in labels.unique().tolist()]
    per_class = [v for v in per_class if not torch.isnan(v)]
    return float(torch.stack(per_class).mean()) if per_class else float("nan")


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


def _raw_saliency(model: nn.Module, layer: nn.Module, x: Tensor,
                  target: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """ReLU'd Grad-CAM of `target` (None: the predicted class) bilinearly resized to the input,
    before min-max; (B, H, W) and the logits (B, K), detached."""
    cam, logits = grad_cam(model, layer, x, target=target, create_graph=False, relu=True)
    return upsample_cam(cam.detach(), x.shape[-2:]), logits.detach()


def explanation_metrics(model: nn.Module, layer: nn.Module, x: Tensor, y: Tensor,
                        masks: Tensor | None = None, fill: Fill = 0.0,
                        ks: Sequence[float] = DEFAULT_KS,
                        fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
                        chunk_size: int = 1024,
                        pg_tolerance_px224: float = PG_TOLERANCE_PX224) -> dict[str, float]:
    """All explanation numbers for one evaluation batch; what the trainer records.

    Faithfulness explains the *predicted* class (Grad-CAM, ReLU, bilinear, min-max: method.md
    section 4). Localisation explains the *ground-truth* class y: its ReLU'd Grad-CAM before
    min-max (only samples predicted wrongly need a second Grad-CAM). The model is evaluated in
    eval mode and every submodule's mode is restored afterwards; parameters' .grad are untouched.

    Args:
        model: x -> logits.
        layer: the Grad-CAM layer (submodule of model).
        x: images (B, C, H, W), normalised.
        y: labels (B,).
        masks: optional ground truth (B, 1, H, W) or (B, H, W) in [0, 1].
        fill: removed-pixel value in normalised space, or "blur".
        ks: percentages for comprehensiveness / sufficiency.
        fractions: RISE grid (`metric_grid`); see `faithfulness` for the forwards it costs.
        seed: seed of the random control map.
        chunk_size: images per forward, for the saliency and the perturbations.
        pg_tolerance_px224: pointing-game tolerance in pixels at 224 px, scaled to x's size.

    Returns:
        comp, suff, comp_rand, suff_rand, del, ins and, with masks, pg, pg_cls (per-class mean
        of pg), epg, iou (NaN when every mask is empty), as Python floats averaged over the batch.
    """
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        parts = [_raw_saliency(model, layer, x[i:i + chunk_size])
                 for i in range(0, x.shape[0], chunk_size)]
        raw = torch.cat([p[0] for p in parts])  # (B, H, W), predicted class
        logits = torch.cat([p[1] for p in parts])  # (B, K)
        per_sample = faithfulness(model, normalize_cam(raw), x, fill=fill, ks=ks,
                                  fractions=fractions, seed=seed, chunk_size=chunk_size,
                                  clean_logits=logits)
        if masks is not None:
            y = y.to(x.device)
            wrong = (logits.argmax(dim=1) != y).nonzero().flatten()
            raw_true = raw.clone()  # Grad-CAM of y; samples do not interact in eval mode
            for i in range(0, len(wrong), chunk_size):
                idx = wrong[i:i + chunk_size]
                raw_true[idx] = _raw_saliency(model, layer, x[idx], target=y[idx])[0]
    finally:
        _set_modes(model, modes)
    keys = ("comp", "suff", "comp_rand", "suff_rand", "del", "ins")
    out = {k: float(per_sample[k].mean()) for k in keys}
    if masks is not None:
        tol = pg_tolerance_px(pg_tolerance_px224, *x.shape[-2:])
        loc = localization(raw_true, masks.to(raw_true.device), tolerance_px=tol)
        out.update({k: float(v.nanmean()) for k, v in loc.items()})
        out["pg_cls"] = class_mean(loc["pg"], y)
    return out
