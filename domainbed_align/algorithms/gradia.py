"""GRADIA (Gao et al., CSCW 2022, https://arxiv.org/abs/2202.02838).

Human-in-the-loop attention alignment: the min-max Grad-CAM of the true class should equal the
relevance mask pooled to the Grad-CAM grid (optionally Gaussian-blurred):
    L = CE + gradia_lambda * mean_i w_i * mean_cells |norm(cam_i) - pool(m_i)|,
w_i = 0 for samples whose mask is empty or full.
"""
import torch.nn.functional as F

from domainbed_align.algorithms import register_algorithm
from domainbed_align.algorithms.guidance import (GuidedERM, blur_maps, guidable, pool_mask,
                                                 true_class_cam, weighted_mean)


def gradia_term(g, m, sigma: float = 0.0):
    """Per-sample L1 between norm. Grad-CAM g (B, h, w) and the pooled (blurred) mask (B, 1, H, W)."""
    target = blur_maps(pool_mask(m, g.shape[-2:]), sigma)
    return (g - target).abs().mean(dim=(1, 2))


@register_algorithm
class GRADIA(GuidedERM):
    """GRADIA (Gao et al., CSCW 2022): L1 between Grad-CAM and the relevance mask."""

    NEEDS_MASKS = True

    def losses(self, x, y, m):
        hp = self.hparams
        _, g, logits = true_class_cam(self, x, y)
        attention = weighted_mean(gradia_term(g, m, hp["gradia_blur_sigma"]), guidable(m))
        ce = F.cross_entropy(logits, y)
        return {"ce": ce, "attention": attention, "loss": ce + hp["gradia_lambda"] * attention}
