"""ALIGN (Hong et al., AAAI 2026, https://arxiv.org/abs/2511.06944).

A classifier and a soft masker trained in alternation, each with the other frozen:
- masker step:  L_mask = MSE(p_y(x*M) - p_y(x*(1-M)), 1) + l1 * mean(M) + l2 * TV(M)
  (the kept evidence should carry the prediction and the removed part should not);
- classifier step: L_clf = CE + l3 * BCE(norm(GradCAM_y(x)), pool(M(x))) + l4 * L_reg
  (Grad-CAM pulled towards the mask; L_reg is DRE's same-class mixup regulariser).
Warm-up trains the classifier alone with CE + l4 * L_reg. One `update()` is one round:
`masker_steps` masker updates, then `classifier_steps` classifier updates, on the same batch,
so the classifier is updated at least as often as ERM's per DomainBed step.
"""
import contextlib
from typing import Dict

import torch
import torch.nn.functional as F

from domainbed_align import networks
from domainbed_align.algorithms import register_algorithm
from domainbed_align.algorithms.base import Algorithm, concat_batches
from domainbed_align.algorithms.dre import dre_regulariser
from domainbed_align.explain.gradcam import grad_cam, normalize_cam

BCE_EPS = 1e-6


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """No parameter of `module` gets a gradient, and its BatchNorm/Dropout state cannot change."""
    flags = [p.requires_grad for p in module.parameters()]
    was_training = module.training
    module.requires_grad_(False)
    module.eval()
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
        module.train(was_training)


def total_variation(m: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of vertically and horizontally neighbouring mask pixels."""
    return 0.5 * ((m[..., 1:, :] - m[..., :-1, :]).abs().mean()
                  + (m[..., :, 1:] - m[..., :, :-1]).abs().mean())


def _descend(optimizer: torch.optim.Optimizer, module: torch.nn.Module, loss: torch.Tensor) -> None:
    """One step on `module`'s trainable parameters only: gradients come from autograd.grad, so
    nothing leaks into the frozen module's .grad (a known pitfall of .backward())."""
    params = [q for q in module.parameters() if q.requires_grad]
    grads = torch.autograd.grad(loss, params)
    optimizer.zero_grad(set_to_none=True)
    for q, g in zip(params, grads):
        q.grad = g
    optimizer.step()


@register_algorithm
class ALIGN(Algorithm):
    """Jointly ALIGNing predictions and explanations with a learned soft masker (AAAI 2026)."""

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self._build_classifier()
        self.masker = networks.Masker(input_shape, hparams["masker_width"])
        self.optimizer = self._adam(self.network.parameters())
        self.masker_optimizer = self._adam(self.masker.parameters(), lr=hparams["masker_lr"])
        self.register_buffer("update_count", torch.tensor(0, dtype=torch.long))

    # ------------------------------------------------------------------ the two steps
    def _kept_and_removed(self, x, m):
        """x with only the mask kept, and with the mask removed; one batch (2B, C, H, W)."""
        if self.hparams["mask_fill"] == "blur":
            from domainbed_align.explain.metrics import make_fill
            fill = make_fill(x, "blur")
            return torch.cat([fill + (x - fill) * m, x - (x - fill) * m])
        if self.hparams["mask_fill"] != "zero":
            raise ValueError(f"mask_fill must be 'zero' or 'blur', got {self.hparams['mask_fill']!r}")
        xm = x * m  # fill 0 in normalised space: the mean colour
        return torch.cat([xm, x - xm])

    def masker_step(self, x, y) -> Dict[str, float]:
        hp = self.hparams
        with frozen(self.network):
            m = self.masker(x)                                     # (B, 1, H, W) in [0, 1]
            probs = self.network(self._kept_and_removed(x, m)).softmax(dim=1)  # one forward
            p = probs.gather(1, torch.cat([y, y]).view(-1, 1)).view(2, -1)   # (2, B)
            dist = F.mse_loss(p[0] - p[1], torch.ones_like(p[0]))
            area, tv = m.mean(), total_variation(m)
            loss = dist + hp["align_l1"] * area + hp["align_l2"] * tv
            _descend(self.masker_optimizer, self.masker, loss)
        return {"mask_loss": loss.item(), "mask_dist": dist.item(), "mask_l1": area.item(),
                "mask_tv": tv.item(), "mask_area": area.item()}

    def classifier_step(self, x, y, align: bool) -> Dict[str, float]:
        hp = self.hparams
        create_graph = hp["align_create_graph"]
        if hp["align_l4"] > 0:
            logits, cam, reg, _ = dre_regulariser(self.network, self.cam_layer, x, y, self.num_classes,
                                                  hp, create_graph=create_graph)
        else:
            cam, logits = grad_cam(self.network, self.cam_layer, x, y, create_graph=create_graph,
                                   detach_weights=not create_graph, relu=True)
            reg = torch.zeros((), device=x.device)
        ce = F.cross_entropy(logits, y)
        loss = ce + hp["align_l4"] * reg
        out = {"ce": ce.item(), "reg": reg.item()}
        if align:
            with torch.no_grad(), frozen(self.masker):
                target = F.adaptive_avg_pool2d(self.masker(x), cam.shape[-2:])[:, 0]  # (B, h, w)
            g = normalize_cam(cam, rel_eps=hp["cam_rel_eps"]).clamp(BCE_EPS, 1 - BCE_EPS)
            align_loss = F.binary_cross_entropy(g, target)
            loss = loss + hp["align_l3"] * align_loss
            out["align"] = align_loss.item()
        _descend(self.optimizer, self.network, loss)
        out["loss"] = loss.item()
        return out

    # ------------------------------------------------------------------ DomainBed API
    def update(self, minibatches, unlabeled=None):
        x, y, _ = concat_batches(minibatches)
        hp = self.hparams
        warm = int(self.update_count) < hp["align_warmup_steps"]
        self.update_count += 1
        if warm:
            with frozen(self.masker):
                return self.classifier_step(x, y, align=False)
        vals: Dict[str, list] = {}
        for _ in range(hp["masker_steps"]):
            for k, v in self.masker_step(x, y).items():
                vals.setdefault(k, []).append(v)
        with frozen(self.masker):
            for _ in range(hp["classifier_steps"]):
                for k, v in self.classifier_step(x, y, align=True).items():
                    vals.setdefault(k, []).append(v)
        return {k: sum(v) / len(v) for k, v in vals.items()}

    def predict(self, x):
        return self.network(x)

    def learned_mask(self, x):
        return self.masker(x)

    @torch.no_grad()
    def explanation_extras(self, x, y, m):
        from domainbed_align.explain.metrics import localization
        mask = self.masker(x)  # (B, 1, H, W)
        out = {"mask_area": float(mask.mean())}
        if m is not None:
            loc = localization(mask[:, 0], m)
            out["mask_epg"] = float(torch.nanmean(loc["epg"]))
            out["mask_iou"] = float(torch.nanmean(loc["iou"]))
        return out
