"""DRE's explanation regulariser (Li et al., CVPR 2023, https://arxiv.org/abs/2303.16390).

Same-class mixup of images: the Grad-CAM of a mixed image should be the same mix of the two
Grad-CAMs (consistency), Grad-CAMs should be sparse, and the mixed image keeps its label. ALIGN
borrows it as L_reg. Computed as DRE's public code (`dre/mixuploss.py`) computes it:
- Grad-CAM as captum's `LayerGradCam` defaults: no ReLU, channel weights without a graph
  (constants; the map stays differentiable through the activations), plain per-sample min-max;
- partners: a random permutation inside each class; lambda ~ Beta(0.2, 0.2) per sample;
- sparsity: the mean of the clean and the mixed maps' `torch.linalg.norm(map, dim=(1, 2),
  ord=1)` on the (n, 1, h, w) map, i.e. the mean over columns of each column's largest value;
- each term is averaged inside a class, summed over the classes present and divided by the
  dataset's number of classes.
Batched: one forward over [x, x_mix] and per-sample weights 1 / n_class replace the per-class
loop, so the cost does not grow with the number of classes.
"""
from typing import Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from domainbed_align.algorithms.registry import register_algorithm
from domainbed_align.algorithms.base import ERM, concat_batches, step
from domainbed_align.explain.gradcam import grad_cam_parts, normalize_cam


def same_class_partners(y: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """partner[i]: a uniformly random permutation inside each class (a sample may be its own).

    Sorting by (class, random key) twice gives two random orders of each class's run; pairing
    the runs position by position is a random bijection inside each class.
    """
    keys = [y.double() * 2 + torch.rand(len(y), generator=generator, dtype=torch.float64).to(y.device)
            for _ in range(2)]
    first, second = torch.argsort(keys[0]), torch.argsort(keys[1])
    partner = torch.empty_like(first)
    partner[first] = second
    return partner


def mixup_draw(y: Tensor, alpha: float) -> Tuple[Tensor, Tensor]:
    """(partner (B,), lambda (B,)): DRE's random draws for one batch, lambda ~ Beta(alpha, alpha)."""
    lam = torch.distributions.Beta(alpha, alpha).sample((len(y),))
    return same_class_partners(y), lam.to(y.device)


def column_max_norm(g: Tensor) -> Tensor:
    """DRE's sparsity of maps g (B, h, w): `torch.linalg.norm(g[:, None], dim=(1, 2), ord=1)`
    is the matrix 1-norm of each (1, h) slice, i.e. max_h |g|, then averaged over w -> (B,)."""
    return g.abs().amax(dim=1).mean(dim=1)


def _class_sum(values: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """sum over the classes present of the class's mean of `values` (B,), / num_classes."""
    counts = torch.bincount(y, minlength=num_classes).to(values.dtype)
    return (values / counts[y]).sum() / num_classes


def dre_terms(cam: Tensor, cam_mix: Tensor, logits_mix: Tensor, y: Tensor, partner: Tensor,
              lam: Tensor, num_classes: int, rel_eps: float = 0.0) -> Dict[str, Tensor]:
    """DRE's three terms from the raw Grad-CAMs (B, h, w) of x and x_mix and x_mix's logits."""
    g, g_mix = normalize_cam(cam, rel_eps=rel_eps), normalize_cam(cam_mix, rel_eps=rel_eps)
    lam = lam.view(-1, 1, 1).to(g.dtype)
    target = lam * g + (1 - lam) * g[partner]
    per_sample = {
        "consistency": (g_mix - target).abs().mean(dim=(1, 2)),
        "sparsity": 0.5 * (column_max_norm(g) + column_max_norm(g_mix)),
        "ce_mix": F.cross_entropy(logits_mix, y, reduction="none"),
    }
    return {k: _class_sum(v, y, num_classes) for k, v in per_sample.items()}


class Regularised(NamedTuple):
    logits: Tensor   # (B, K) of the clean images, with graph
    cam: Tensor      # (B, h, w) raw Grad-CAM of the clean images; alpha keeps its graph iff asked
    reg: Tensor      # weighted L_reg
    terms: Dict[str, Tensor]


def dre_regulariser(network, layer, x: Tensor, y: Tensor, num_classes: int, hparams: dict,
                    create_graph: bool = False, partner: Optional[Tensor] = None,
                    lam: Optional[Tensor] = None) -> Regularised:
    """L_reg from one forward over [x, x_mix]. DRE's terms always use constant channel weights;
    `create_graph` only keeps alpha's graph in the returned clean `cam` (ALIGN's alignment).
    `partner` and `lam` can be injected (tests); otherwise they are drawn as DRE draws them."""
    B = len(y)
    if partner is None or lam is None:
        partner, lam = mixup_draw(y, hparams["dre_mix_alpha"])
    lam4 = lam.view(-1, 1, 1, 1).to(x.dtype)
    x_mix = lam4 * x + (1 - lam4) * x[partner]
    A, alpha, logits_all = grad_cam_parts(network, layer, torch.cat([x, x_mix]), torch.cat([y, y]),
                                          create_graph=create_graph)
    cam_const = (alpha.detach() * A).sum(dim=1)  # (2B, h, w), captum's LayerGradCam
    terms = dre_terms(cam_const[:B], cam_const[B:], logits_all[B:], y, partner, lam, num_classes,
                      rel_eps=hparams["dre_cam_rel_eps"])
    reg = (hparams["dre_consistency_weight"] * terms["consistency"]
           + hparams["dre_sparsity_weight"] * terms["sparsity"]
           + hparams["dre_ce_weight"] * terms["ce_mix"])
    cam = (alpha[:B] * A[:B]).sum(dim=1) if create_graph else cam_const[:B]
    return Regularised(logits_all[:B], cam, reg, terms)


@register_algorithm
class DRE(ERM):
    """Distributionally robust explanations (Li et al. CVPR 2023): CE + w * L_reg."""

    def update(self, minibatches, unlabeled=None):
        x, y, _ = concat_batches(minibatches)
        out = dre_regulariser(self.network, self.cam_layer, x, y, self.num_classes, self.hparams)
        ce = F.cross_entropy(out.logits, y)
        loss = ce + self.hparams["dre_weight"] * out.reg
        step(self.optimizer, loss)
        return {"loss": loss.item(), "ce": ce.item(), "reg": out.reg.item(),
                **{f"reg_{k}": v.item() for k, v in out.terms.items()}}
