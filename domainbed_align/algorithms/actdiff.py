"""ActDiff (Viviano et al., 2019, "Saliency is a possible red herring when diagnosing poor
generalization", https://arxiv.org/abs/1910.00199).

The representation should not change when the background changes: the pixels outside the mask
are shuffled among themselves (per sample, all channels together) and the pooled features of
x and of the shuffled x should match:
    L = CE(f(x), y) + actdiff_lambda * mean_i w_i * ||h(x_i) - h(shuffle(x_i))||_2.
One forward over [x, x_shuffled].
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from domainbed_align.algorithms.registry import register_algorithm
from domainbed_align.algorithms.guidance import GuidedERM, guidable, weighted_mean


def shuffle_background(x: Tensor, m: Tensor, generator=None) -> Tensor:
    """x with its background pixels (m <= 0.5) permuted at random, each sample on its own.

    Vectorised: sorting (is_fg, index) lists the background positions in order and sorting
    (is_fg, random key) lists them in random order; pixel order_a[j] takes pixel order_b[j].
    Foreground keys are their index in both sorts, so foreground pixels stay where they are.
    """
    B, C, H, W = x.shape
    n = H * W
    fg = (m.view(B, n) > 0.5)
    idx = torch.arange(n, device=x.device, dtype=torch.float64).expand(B, n)
    rand = torch.rand((B, n), generator=generator, dtype=torch.float64).to(x.device) * n
    big = float(n + 1)
    order_a = torch.argsort(fg * big + idx, dim=1)
    order_b = torch.argsort(fg * big + torch.where(fg, idx, rand), dim=1)
    flat = x.reshape(B, C, n)
    out = torch.empty_like(flat)
    out.scatter_(2, order_a.unsqueeze(1).expand(B, C, n), flat.gather(2, order_b.unsqueeze(1).expand(B, C, n)))
    return out.view_as(x)


@register_algorithm
class ActDiff(GuidedERM):
    """ActDiff (Viviano et al., 2019): features invariant to a shuffled background."""

    NEEDS_MASKS = True

    def losses(self, x, y, m):
        B = len(y)
        h = self.featurizer(torch.cat([x, shuffle_background(x, m)])).float()  # (2B, D)
        logits = self.classifier(h[:B]).float()  # float32 also under bf16 autocast
        dist = weighted_mean((h[:B] - h[B:]).norm(dim=1), guidable(m))
        ce = F.cross_entropy(logits, y)
        return {"ce": ce, "actdiff": dist, "loss": ce + self.hparams["actdiff_lambda"] * dist}
