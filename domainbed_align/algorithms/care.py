"""CARE, class attention to regions of lesion (Zhuang et al., MIDL 2019,
https://openreview.net/forum?id=HkgDJ-HMfE).

The Grad-CAM of the true class, upsampled to the image, should be high inside the relevant
region (rewarded up to a cap tau) and low outside it:
    L = (1 - care_alpha) * CE + care_alpha * mean_i w_i * (-min(inner_i, care_tau) + outer_i),
inner_i / outer_i = mean of G over the pixels inside / outside sample i's mask (region means,
so the two regions count alike whatever their areas), G = min-max Grad-CAM in [0, 1].
"""
import torch
from torch import Tensor

from domainbed_align.algorithms.registry import register_algorithm
from domainbed_align.algorithms.guidance import CamGuided
from domainbed_align.explain.gradcam import upsample_cam


def care_term(g: Tensor, m: Tensor, tau: float) -> Tensor:
    """Per-sample -min(inner, tau) + outer, g (B, H, W) at image size, m (B, 1, H, W)."""
    inner = m[:, 0]
    outer = 1 - inner
    mean_in = (g * inner).sum(dim=(1, 2)) / inner.sum(dim=(1, 2)).clamp_min(1e-8)
    mean_out = (g * outer).sum(dim=(1, 2)) / outer.sum(dim=(1, 2)).clamp_min(1e-8)
    return -torch.clamp(mean_in, max=tau) + mean_out


@register_algorithm
class CARE(CamGuided):
    """CARE (Zhuang et al., MIDL 2019): reward Grad-CAM inside the mask, penalise it outside."""

    TERM = "attention"

    def cam_term(self, g, m, x):
        g = upsample_cam(g, x.shape[-2:])  # bilinear of values in [0, 1] stays in [0, 1]
        return care_term(g, m, self.hparams["care_tau"])

    def combine(self, ce, term):
        alpha = self.hparams["care_alpha"]
        return (1 - alpha) * ce + alpha * term
