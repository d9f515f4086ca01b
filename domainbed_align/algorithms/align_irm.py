"""ALIGN_IRM: ALIGN whose masker must keep evidence on which the frozen classifier is equally
well calibrated in every training domain (IRMv1, Arjovsky et al. 2019,
https://arxiv.org/abs/1907.02893, applied to the prediction from the kept part).

Masker step (classifier frozen), ALIGN's loss plus one term:
    L_mask = MSE(p_y(x*M) - p_y(x*(1-M)), 1) + l1 mean(M) + l2 TV(M)
             + align_irm_lambda * mean_e [ d/dw R_e^a(w) * d/dw R_e^b(w) ]_{w=1},
R_e^a, R_e^b the mean CE of w * f(x*M) on the even- and odd-position samples of domain e
(DomainBed's unbiased estimate of |grad_w R_e|^2 from two halves of a batch; domains with
fewer than two samples in the batch are left out). The classifier step and the schedule are
ALIGN's, unchanged.

Why: a kept part that holds the corner patch, whose label agreement is 0.9 / 0.8 / 0.7 across
the training domains, leaves the classifier over-confident where the patch agrees less and
under-confident where it agrees more, so no single logit scale w is optimal in every domain and
the penalty is positive; a kept part of evidence that predicts equally well everywhere can be
scaled right in all domains at once. With one training domain this is a calibration penalty.
"""
import torch
import torch.nn.functional as F

from domainbed_align.algorithms.registry import register_algorithm
from domainbed_align.algorithms.align import ALIGN


def irm_penalty(logits, y, domains):
    """IRMv1 (DomainBed's split-batch form), averaged over the domains with >= 2 samples."""
    terms = []
    for e in torch.unique(domains):
        le, ye = logits[domains == e], y[domains == e]  # (n_e, K), (n_e,)
        if len(ye) < 2:
            continue
        scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
        g1, = torch.autograd.grad(F.cross_entropy(le[0::2] * scale, ye[0::2]), scale, create_graph=True)
        g2, = torch.autograd.grad(F.cross_entropy(le[1::2] * scale, ye[1::2]), scale, create_graph=True)
        terms.append(g1 * g2)
    return torch.stack(terms).mean() if terms else logits.sum() * 0.0


@register_algorithm
class ALIGN_IRM(ALIGN):
    """ALIGN with an IRMv1 penalty on the kept part's prediction in the masker's loss."""

    PENALTY, WEIGHT = "mask_irm", "align_irm_lambda"

    def masker_penalty(self, kept_logits, y, domains):
        return irm_penalty(kept_logits, y, domains)
