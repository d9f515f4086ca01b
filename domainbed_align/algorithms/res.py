"""RES, robust explanation supervision (Gao et al., KDD 2022, https://arxiv.org/abs/2206.13413).

RES-G: the target is the mask pooled to the Grad-CAM grid and Gaussian-blurred (annotations
are imprecise near their boundary), plus a robust boundary term that only asks the map to
separate relevant from irrelevant cells at *some* threshold a:
    L = CE + res_lambda * ( mean|g - T| + ReLU(B(a*) - res_eta) ),  T = blur(pool(m)) / max,
    B(a) = mean |tanh(res_tanh_scale * (g - a)) - F|,  F = +1 on mask cells, -1 elsewhere,
a* = argmin_a B(a) over `res_n_thresholds` evenly spaced candidates in [0, 1], one a for the
batch, found in one vectorised pass (no gradient through the choice). g = min-max Grad-CAM.
T peaks at 1 as in the reference code (`res_target_rescale`; false: blur(pool(m)) as is).
Samples whose mask is empty or full have no boundary and get zero weight.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from domainbed_align.algorithms.registry import register_algorithm
from domainbed_align.algorithms.guidance import (GuidedERM, blur_maps, guidable, peak_one,
                                                 pool_mask, true_class_cam, weighted_mean)


def boundary_sign(m_pooled: Tensor) -> Tensor:
    """F: +1 on cells that are mostly relevant, -1 elsewhere (negatives = the mask's complement)."""
    return torch.where(m_pooled > 0.5, 1.0, -1.0).to(m_pooled.dtype)


def best_threshold(g: Tensor, sign: Tensor, weight: Tensor, n: int, scale: float) -> Tensor:
    """The a in linspace(0, 1, n) minimising the weighted boundary term; one pass, no grad."""
    with torch.no_grad():
        a = torch.linspace(0, 1, n, device=g.device, dtype=g.dtype).view(n, 1, 1, 1)
        per_sample = (torch.tanh(scale * (g.unsqueeze(0) - a)) - sign).abs().mean(dim=(2, 3))  # (n, B)
        cost = (per_sample * weight).sum(dim=1)
        return a.view(n)[cost.argmin()]


def res_terms(g: Tensor, m: Tensor, hp: dict):
    """(per-sample L1 to the blurred target, per-sample boundary term at a*, a*)."""
    mp = pool_mask(m, g.shape[-2:])  # (B, h, w)
    target = blur_maps(mp, hp["res_blur_sigma"])
    if hp["res_target_rescale"]:
        target = peak_one(target)
    l1 = (g - target).abs().mean(dim=(1, 2))
    sign = boundary_sign(mp)
    a = best_threshold(g, sign, guidable(m), hp["res_n_thresholds"], hp["res_tanh_scale"])
    boundary = (torch.tanh(hp["res_tanh_scale"] * (g - a)) - sign).abs().mean(dim=(1, 2))
    return l1, boundary, a


@register_algorithm
class RES(GuidedERM):
    """RES-G (Gao et al., KDD 2022): blurred-mask target plus a robust boundary term."""

    NEEDS_MASKS = True

    def losses(self, x, y, m):
        hp = self.hparams
        _, g, logits = true_class_cam(self, x, y)
        w = guidable(m)
        l1, boundary, a = res_terms(g, m, hp)
        l1, boundary = weighted_mean(l1, w), weighted_mean(boundary, w)
        explanation = l1 + F.relu(boundary - hp["res_eta"])
        ce = F.cross_entropy(logits, y)
        return {"ce": ce, "l1": l1, "boundary": boundary, "threshold": a,
                "loss": ce + hp["res_lambda"] * explanation}
