"""GRADIA (Gao et al., CSCW 2022, https://arxiv.org/abs/2202.02838).

Human-in-the-loop attention alignment: the min-max Grad-CAM of the true class should equal the
relevance mask pooled to the Grad-CAM grid (optionally Gaussian-blurred):
    L = CE + gradia_lambda * mean_i w_i * mean_cells |norm(cam_i) - T_i|,  T = pool(m) / max,
w_i = 0 for samples whose mask is empty or full. T peaks at 1 like the reference's binary
target and the min-max Grad-CAM (`gradia_target_rescale`; false: pool(m) as is).
"""
from domainbed_align.algorithms.registry import register_algorithm
from domainbed_align.algorithms.guidance import CamGuided, blur_maps, peak_one, pool_mask


def gradia_term(g, m, sigma: float = 0.0, rescale: bool = False):
    """Per-sample L1 between norm. Grad-CAM g (B, h, w) and the pooled (blurred) mask (B, 1, H, W),
    rescaled to peak 1 when `rescale`."""
    target = blur_maps(pool_mask(m, g.shape[-2:]), sigma)
    if rescale:
        target = peak_one(target)
    return (g - target).abs().mean(dim=(1, 2))


@register_algorithm
class GRADIA(CamGuided):
    """GRADIA (Gao et al., CSCW 2022): L1 between Grad-CAM and the relevance mask."""

    TERM, WEIGHT = "attention", "gradia_lambda"

    def cam_term(self, g, m, x):
        return gradia_term(g, m, self.hparams["gradia_blur_sigma"],
                           self.hparams["gradia_target_rescale"])
