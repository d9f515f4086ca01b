"""HAICS, human-AI interactive and continuous sensemaking (Shen et al., CHI 2021 Extended
Abstracts, "... image classification using scribble attention maps"): binary cross-entropy
between the min-max Grad-CAM of the true class and scribbled positive/negative regions.

With one mask there are no separate negative annotations: `haics_negatives: outside` takes every
cell outside the mask as a negative (target 0); `none` supervises the mask cells only.
    L = CE + haics_lambda * mean_i w_i * mean_{cells c} BCE(clamp(g_ic), pool(m)_ic).
"""
import torch.nn.functional as F
from torch import Tensor

from domainbed_align.algorithms.registry import register_algorithm
from domainbed_align.algorithms.guidance import CamGuided, pool_mask
from domainbed_align.lib import precision
from domainbed_align.lib.errors import ConfigError

BCE_EPS = 1e-6
NEGATIVES = ("outside", "none")


def haics_term(g: Tensor, m: Tensor, negatives: str = "outside") -> Tensor:
    """Per-sample mean BCE over the supervised cells; g (B, h, w) in [0, 1], m (B, 1, H, W)."""
    target = pool_mask(m, g.shape[-2:])
    with precision.no_autocast(g.device):  # CUDA autocast refuses binary_cross_entropy
        bce = F.binary_cross_entropy(g.clamp(BCE_EPS, 1 - BCE_EPS), target, reduction="none")
    if negatives == "outside":
        return bce.mean(dim=(1, 2))
    if negatives == "none":
        keep = (target > 0.5).to(bce.dtype)
        return (bce * keep).sum(dim=(1, 2)) / keep.sum(dim=(1, 2)).clamp_min(1.0)
    raise ConfigError(f"haics_negatives must be one of {', '.join(NEGATIVES)}, got {negatives!r}")


@register_algorithm
class HAICS(CamGuided):
    """HAICS (Shen et al., CHI EA 2021): BCE between Grad-CAM and the relevance mask."""

    TERM, WEIGHT = "bce", "haics_lambda"

    def cam_term(self, g, m, x):
        return haics_term(g, m, self.hparams["haics_negatives"])
