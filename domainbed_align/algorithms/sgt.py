"""Saliency-guided training, SGT (Ismail et al., NeurIPS 2021, https://arxiv.org/abs/2111.14338).

Per sample, the k% input features (pixel x channel) with the smallest input-gradient magnitude
of the true class are replaced by values drawn uniformly from that sample's value range; the
prediction on the masked input should stay that of the clean one:
    L = CE(f(x), y) + sgt_lambda * KL(p(x) || p(x_masked)).
The saliency is a constant (no create_graph): SGT only uses it to choose what to mask.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from domainbed_align.algorithms.registry import register_algorithm
from domainbed_align.algorithms.guidance import GuidedERM, input_gradient


def mask_low_saliency(x: Tensor, saliency: Tensor, fraction: float, generator=None) -> Tensor:
    """x with the `fraction` lowest-|saliency| features of each sample set to random values.

    Random values are uniform in [min, max] of that sample; ties at the threshold are masked
    (a fraction of 0 masks nothing). x, saliency: (B, C, H, W).
    """
    B = x.shape[0]
    flat = saliency.abs().flatten(1)  # (B, D)
    k = int(fraction * flat.shape[1])
    if k <= 0:
        return x
    thresh = flat.kthvalue(k, dim=1, keepdim=True).values  # (B, 1)
    low = (flat <= thresh).view_as(x)
    xf = x.flatten(1)
    lo, hi = xf.min(1).values.view(B, 1, 1, 1), xf.max(1).values.view(B, 1, 1, 1)
    noise = lo + (hi - lo) * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(low, noise, x)


def kl_to_masked(logits: Tensor, logits_masked: Tensor) -> Tensor:
    """KL(p(x) || p(x_masked)), mean over the batch (SGT's `batchmean`)."""
    return F.kl_div(F.log_softmax(logits_masked, dim=1), F.softmax(logits, dim=1),
                    reduction="batchmean")


@register_algorithm
class SGT(GuidedERM):
    """Saliency-guided training (Ismail et al., NeurIPS 2021): masked-input KL regulariser."""

    def losses(self, x, y, m):
        hp = self.hparams
        g, logits = input_gradient(self.network, x, lambda z: z.gather(1, y.view(-1, 1))[:, 0],
                                   create_graph=False)
        x_masked = mask_low_saliency(x.detach(), g, hp["sgt_k"])
        kl = kl_to_masked(logits, self.network(x_masked))
        ce = F.cross_entropy(logits, y)
        return {"ce": ce, "kl": kl, "loss": ce + hp["sgt_lambda"] * kl}
