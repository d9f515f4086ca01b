"""ALIGN_VREx: ALIGN whose masker is also penalised for a kept part whose risk differs across
the training domains (V-REx, Krueger et al., ICML 2021, https://arxiv.org/abs/2003.00688,
applied to the masker's kept evidence instead of the features).

Masker step (classifier frozen), ALIGN's loss plus one term:
    L_mask = MSE(p_y(x*M) - p_y(x*(1-M)), 1) + l1 mean(M) + l2 TV(M)
             + align_vrex_lambda * Var_e[R_e],   R_e = mean_{i in e} CE(f(x_i * M_i), y_i),
Var_e the population variance (DomainBed's VREx: mean of squared deviations from the mean)
over the training domains present in the batch. The classifier step and the schedule are
ALIGN's, unchanged.

Why the kept part's risk only: a shortcut whose label agreement differs by domain (the corner
patch in SpuriousDigits: 0.9 / 0.8 / 0.7) makes a kept part that contains it more accurate in
one domain than another, while evidence that predicts equally well everywhere (the strokes)
does not. The removed part is left out on purpose: once the patch is dropped it sits in x*(1-M),
whose risk then varies across domains, and penalising that too would push the patch back into
the mask. With one training domain (single-source) the variance is 0 and this is ALIGN.
"""
import torch
import torch.nn.functional as F

from domainbed_align.algorithms.registry import register_algorithm
from domainbed_align.algorithms.align import ALIGN


def domain_risks(logits, y, domains):
    """(E,) mean cross-entropy of each training domain present, in increasing domain index."""
    ce = F.cross_entropy(logits, y, reduction="none")  # (B,)
    return torch.stack([ce[domains == e].mean() for e in torch.unique(domains)])


def vrex_penalty(logits, y, domains):
    """Population variance over domains of the per-domain mean CE (0 with one domain)."""
    risks = domain_risks(logits, y, domains)
    return ((risks - risks.mean()) ** 2).mean()


@register_algorithm
class ALIGN_VREx(ALIGN):
    """ALIGN with a V-REx penalty on the kept part's per-domain risk in the masker's loss."""

    PENALTY, WEIGHT = "mask_vrex", "align_vrex_lambda"

    def masker_penalty(self, kept_logits, y, domains):
        return vrex_penalty(kept_logits, y, domains)
