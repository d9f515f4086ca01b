"""DRE's explanation regulariser (Li et al., CVPR 2023, https://arxiv.org/abs/2303.16390).

Same-class mixup of images: the Grad-CAM of a mixed image should be the same mix of the two
Grad-CAMs (consistency), Grad-CAMs should be sparse, and the mixed image keeps its label. ALIGN
borrows it as L_reg. Batched: one permutation inside each class and one forward over
[x, x_mix] serve every class at once; terms are averaged per class, then over classes.
"""
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from domainbed_align.algorithms import register_algorithm
from domainbed_align.algorithms.base import ERM, concat_batches, step
from domainbed_align.explain.gradcam import grad_cam, normalize_cam


def same_class_mix(x: Tensor, y: Tensor, num_classes: int, alpha: float, generator=None):
    """x_mix, partner index and per-sample lambda; lambda ~ Beta(alpha, alpha), one per class."""
    B = len(y)
    keys = torch.rand(B, generator=generator).to(x.device) + y.to(x.dtype) * 2  # sort by class, random inside
    order = torch.argsort(keys)
    sorted_y = y[order]
    # within each class run, a random cyclic shift by one of its shuffled order
    shuffled = torch.empty_like(order)
    starts = torch.ones_like(sorted_y, dtype=torch.bool)
    starts[1:] = sorted_y[1:] != sorted_y[:-1]
    run_id = torch.cumsum(starts.long(), 0) - 1
    run_start = torch.nonzero(starts).squeeze(1)
    run_len = torch.bincount(run_id)
    pos = torch.arange(B, device=x.device) - run_start[run_id]
    nxt = run_start[run_id] + (pos + 1) % run_len[run_id]
    shuffled[order] = order[nxt]
    lam_class = torch.distributions.Beta(alpha, alpha).sample((num_classes,)).to(x.device)
    lam = lam_class[y].view(-1, 1, 1, 1)
    return lam * x + (1 - lam) * x[shuffled], shuffled, lam.view(-1)


def _per_class_mean(values: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Mean over the classes present of the per-class mean of `values` (B,)."""
    sums = torch.zeros(num_classes, device=values.device, dtype=values.dtype).index_add_(0, y, values)
    counts = torch.bincount(y, minlength=num_classes).to(values.dtype)
    present = counts > 0
    return (sums[present] / counts[present]).mean()


def dre_terms(cam: Tensor, logits_mix: Tensor, cam_mix: Tensor, y: Tensor, partner: Tensor,
              lam: Tensor, num_classes: int, rel_eps: float = 0.0) -> Dict[str, Tensor]:
    """DRE's three terms from the Grad-CAMs of x and x_mix (cam, cam_mix: (B, h, w), ReLU'd)."""
    g, g_mix = normalize_cam(cam, rel_eps=rel_eps), normalize_cam(cam_mix, rel_eps=rel_eps)
    target = lam.view(-1, 1, 1) * g + (1 - lam.view(-1, 1, 1)) * g[partner]
    consistency = (g_mix - target).abs().mean(dim=(1, 2))
    sparsity = g.mean(dim=(1, 2))
    ce_mix = F.cross_entropy(logits_mix, y, reduction="none")
    return {k: _per_class_mean(v, y, num_classes) for k, v in
            (("consistency", consistency), ("sparsity", sparsity), ("ce_mix", ce_mix))}


def dre_regulariser(network, layer, x: Tensor, y: Tensor, num_classes: int, hparams: dict,
                    create_graph: bool = True) -> Tuple[Tensor, Tensor, Tensor, Dict[str, Tensor]]:
    """One forward over [x, x_mix]: returns (logits of x, Grad-CAM of x (ReLU), L_reg, terms)."""
    B = len(y)
    x_mix, partner, lam = same_class_mix(x, y, num_classes, hparams["dre_mix_alpha"])
    cam_all, logits_all = grad_cam(network, layer, torch.cat([x, x_mix]), torch.cat([y, y]),
                                   create_graph=create_graph, detach_weights=not create_graph, relu=True)
    terms = dre_terms(cam_all[:B], logits_all[B:], cam_all[B:], y, partner, lam, num_classes,
                      rel_eps=hparams["cam_rel_eps"])
    reg = (hparams["dre_consistency_weight"] * terms["consistency"]
           + hparams["dre_sparsity_weight"] * terms["sparsity"]
           + hparams["dre_ce_weight"] * terms["ce_mix"])
    return logits_all[:B], cam_all[:B], reg, terms


@register_algorithm
class DRE(ERM):
    """Distributionally robust explanations (Li et al. CVPR 2023): CE + w * L_reg."""

    def update(self, minibatches, unlabeled=None):
        x, y, _ = concat_batches(minibatches)
        logits, _, reg, terms = dre_regulariser(self.network, self.cam_layer, x, y, self.num_classes,
                                                self.hparams)
        ce = F.cross_entropy(logits, y)
        loss = ce + self.hparams["dre_weight"] * reg
        step(self.optimizer, loss)
        return {"loss": loss.item(), "ce": ce.item(), "reg": reg.item(),
                **{f"reg_{k}": v.item() for k, v in terms.items()}}
