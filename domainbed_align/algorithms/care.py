"""CARE, class attention to regions of lesion (Zhuang et al., MIDL 2019,
https://openreview.net/forum?id=HkgDJ-HMfE).

The Grad-CAM of the true class, upsampled to the image, should be high inside the relevant
region (rewarded up to a cap tau) and low outside it:
    L = (1 - care_alpha) * CE + care_alpha * mean_i w_i * (-min(inner_i, care_tau) + outer_i),
inner_i / outer_i = mean of G over the pixels inside / outside sample i's mask (region means,
so the two regions count alike whatever their areas), G = min-max Grad-CAM in [0, 1].
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from domainbed_align.algorithms import register_algorithm
from domainbed_align.algorithms.guidance import GuidedERM, guidable, true_class_cam, weighted_mean
from domainbed_align.explain.gradcam import upsample_cam


def care_term(g: Tensor, m: Tensor, tau: float) -> Tensor:
    """Per-sample -min(inner, tau) + outer, g (B, H, W) at image size, m (B, 1, H, W)."""
    inner = m[:, 0]
    outer = 1 - inner
    mean_in = (g * inner).sum(dim=(1, 2)) / inner.sum(dim=(1, 2)).clamp_min(1e-8)
    mean_out = (g * outer).sum(dim=(1, 2)) / outer.sum(dim=(1, 2)).clamp_min(1e-8)
    return -torch.clamp(mean_in, max=tau) + mean_out


@register_algorithm
class CARE(GuidedERM):
    """CARE (Zhuang et al., MIDL 2019): reward Grad-CAM inside the mask, penalise it outside."""

    NEEDS_MASKS = True

    def losses(self, x, y, m):
        hp = self.hparams
        _, g, logits = true_class_cam(self, x, y)
        g = upsample_cam(g, x.shape[-2:])  # bilinear of values in [0, 1] stays in [0, 1]
        attention = weighted_mean(care_term(g, m, hp["care_tau"]), guidable(m))
        ce = F.cross_entropy(logits, y)
        alpha = hp["care_alpha"]
        return {"ce": ce, "attention": attention, "loss": (1 - alpha) * ce + alpha * attention}
