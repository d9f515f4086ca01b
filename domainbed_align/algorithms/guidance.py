"""Pieces shared by the explanation-guided baselines (SGT, GRADIA, RES, CARE, RRR, GradMask,
HAICS, ActDiff): the step skeleton, which samples a mask may guide, and the two saliencies.

Each baseline computes its loss terms as tensors in `losses()`; `GuidedERM.update` does the one
optimiser step and returns every term as a Python float. Inner gradients (Grad-CAM's channel
weights, input gradients) come from `torch.autograd.grad`, never `.backward()`, so only the
final loss ever reaches the parameters' `.grad`.
"""
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from domainbed_align.algorithms.base import ERM, concat_batches, step
from domainbed_align.explain.gradcam import grad_cam, normalize_cam
from domainbed_align.explain.metrics import gaussian_blur


class GuidedERM(ERM):
    """ERM's network and optimiser; subclasses define `losses(x, y, m)` with a `loss` key."""

    def losses(self, x: Tensor, y: Tensor, m) -> Dict[str, Tensor]:
        raise NotImplementedError

    def update(self, minibatches, unlabeled=None):
        x, y, m = concat_batches(minibatches)
        if self.NEEDS_MASKS and m is None:
            raise ValueError(f"{type(self).__name__} needs (x, y, m) batches with relevance masks, "
                             f"got (x, y) (upstream DomainBed's trainer passes no masks); train "
                             f"it with `python -m domainbed_align.train`, which does")
        terms = self.losses(x, y, m)
        step(self.optimizer, terms["loss"])
        return {k: float(v.detach()) for k, v in terms.items()}


class CamGuided(GuidedERM):
    """CE plus a weight times a per-sample Grad-CAM-vs-mask term, averaged over the samples
    whose mask can guide (GRADIA, CARE, HAICS). Subclasses set TERM (its key in update()'s
    dict), WEIGHT (the hparam that weights it) and `cam_term`."""

    NEEDS_MASKS = True
    TERM = "attention"
    WEIGHT = ""

    def cam_term(self, g: Tensor, m: Tensor, x: Tensor) -> Tensor:
        """(B,) term from the min-max CAM g (B, h, w) and the mask m (B, 1, H, W)."""
        raise NotImplementedError

    def combine(self, ce: Tensor, term: Tensor) -> Tensor:
        return ce + self.hparams[self.WEIGHT] * term

    def losses(self, x, y, m):
        _, g, logits = true_class_cam(self, x, y)
        term = weighted_mean(self.cam_term(g, m, x), guidable(m))
        ce = F.cross_entropy(logits, y)
        return {"ce": ce, self.TERM: term, "loss": self.combine(ce, term)}


# ------------------------------------------------------------------ masks
def guidable(m: Tensor) -> Tensor:
    """(B,) float weight: 1 where the binarised mask is neither empty nor full, else 0.

    An empty mask says nothing is relevant and a full one that everything is; neither can
    steer an explanation, so such samples get zero explanation weight.
    """
    area = (m > 0.5).flatten(1).float().mean(dim=1)
    return ((area > 0) & (area < 1)).float()


def weighted_mean(values: Tensor, weight: Tensor) -> Tensor:
    """sum(w * v) / sum(w); exactly 0 (with a graph) when no sample has weight."""
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def pool_mask(m: Tensor, size) -> Tensor:
    """(B, 1, H, W) mask -> (B, h, w): the share of relevant pixels in each Grad-CAM cell."""
    return F.adaptive_avg_pool2d(m, tuple(size))[:, 0]


def blur_maps(maps: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of (B, h, w) maps (replicate padding); sigma in cells, 0 = unchanged."""
    return gaussian_blur(maps.unsqueeze(1), sigma)[:, 0] if sigma > 0 else maps


def peak_one(maps: Tensor, eps: float = 1e-6) -> Tensor:
    """Each (B, h, w) map divided by its maximum (peak 1; an all-zero map stays zero), as the
    reference code of RES and GRADIA make their targets to match a min-max Grad-CAM."""
    return maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(eps)


# ------------------------------------------------------------------ saliencies
def true_class_cam(alg, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Grad-CAM of the true class (ReLU) and its min-max version, plus the logits, one forward.

    `cam_create_graph` false (default): channel weights are constants, as in the reference
    implementations; true: fully differentiable, the loss also reaches the head through them.
    Returns cam (B, h, w), norm (B, h, w) in [0, 1], logits (B, K).
    """
    create_graph = alg.hparams["cam_create_graph"]
    cam, logits = grad_cam(alg.network, alg.cam_layer, x, y, create_graph=create_graph,
                           detach_weights=not create_graph, relu=True)
    return cam, normalize_cam(cam, rel_eps=alg.hparams["cam_rel_eps"]), logits


def input_gradient(network, x: Tensor, score_fn, create_graph: bool) -> Tuple[Tensor, Tensor]:
    """d score_fn(logits) / dx for every sample, one forward; returns (grad (B, C, H, W), logits).

    `score_fn` maps logits (B, K) to per-sample scores (B,); samples do not interact, so the
    gradient of their sum is each sample's own gradient. With `create_graph` the gradient is
    itself differentiable (RRR, GradMask penalise it); without, it is a constant (SGT).
    """
    x = x.detach().requires_grad_(True)
    logits = network(x)
    (g,) = torch.autograd.grad(score_fn(logits).sum(), x, create_graph=create_graph,
                               retain_graph=True)
    return g, logits
