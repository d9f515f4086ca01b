"""ALIGN (Hong et al., AAAI 2026, https://arxiv.org/abs/2511.06944).

A classifier and a soft masker trained in alternation, each with the other frozen:
- masker step:  L_mask = MSE(p_y(x*M) - p_y(x*(1-M)), 1) + l1 * mean(M) + l2 * TV(M)
  (the kept evidence should carry the prediction and the removed part should not);
- classifier step: L_clf = CE + w_t * BCE(norm(ReLU(GradCAM_y(x))), pool(M(x))) + l4 * L_reg
  (Grad-CAM pulled towards the mask; L_reg is DRE's same-class mixup regulariser; `align_loss`
  l1 puts mean|norm(...) - pool(M(x))| in place of the BCE, a control for its 1/g gradients).
Schedule, in DomainBed steps t (one `update()` each):
- t < W (`align_warmup_steps`): the classifier alone, CE + l4 * L_reg;
- W <= t < W + Wm (`align_masker_warmup_steps`): the masker learns from the warmed-up
  classifier, which keeps training without alignment (aligning to a masker that has not
  learned anything yet pulls the classifier to a blank target and collapsed it);
- then alignment is on with weight w_t = l3 * min(1, (t - W - Wm + 1) / R), R =
  `align_l3_ramp_steps` (0: full weight at once).
Each step after W is `masker_steps` masker updates and `classifier_steps` classifier updates on
the same batch; with the default 1 and 1 the classifier gets as many updates as ERM's.
Every `update()` returns the same keys (a loss not computed yet is 0: the masker's before W,
`align` before alignment starts), so every record of a run has the same columns.
"""
import contextlib
from typing import Dict

import torch
import torch.nn.functional as F

from domainbed_align import networks
from domainbed_align.algorithms.registry import register_algorithm
from domainbed_align.algorithms.base import Algorithm, concat_batches
from domainbed_align.algorithms.dre import dre_regulariser
from domainbed_align.explain.gradcam import grad_cam, normalize_cam
from domainbed_align.lib import precision

BCE_EPS = 1e-6
MASKER_KEYS = ("mask_loss", "mask_dist", "mask_l1", "mask_tv", "mask_area")
TARGET_POOLS = ("avg", "max", "norm")


def pool_mask(m: torch.Tensor, size, how: str) -> torch.Tensor:
    """The mask (B, 1, H, W) pooled to the Grad-CAM grid (B, h, w): `avg` (a cell's share of
    mask), `max` (a cell holding any relevant pixel is relevant: thin strokes are not blended
    with their background) or `norm` (avg, then per-sample min-max to [0, 1])."""
    if how == "max":
        return F.adaptive_max_pool2d(m, size)[:, 0]
    if how not in ("avg", "norm"):
        raise ValueError(f"align_target_pool must be one of {', '.join(TARGET_POOLS)}, got {how!r}")
    pooled = F.adaptive_avg_pool2d(m, size)[:, 0]
    return normalize_cam(pooled) if how == "norm" else pooled


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
    with precision.no_autocast(loss.device):  # float32 optimiser (lib/precision.py)
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
        xm = x * m  # fill 0 in normalised space: the normalisation mean (a grey)
        return torch.cat([xm, x - xm])

    # A subclass adds `WEIGHT * masker_penalty(...)` to L_mask and reports it under PENALTY
    # (align_vrex.py, align_irm.py); ALIGN itself adds nothing.
    PENALTY, WEIGHT = None, None

    def masker_penalty(self, kept_logits, y, domains):
        """Extra masker term from the kept part's logits (B, K), labels (B,) and training-domain
        index (B,) of each sample; only called when PENALTY is set."""
        raise NotImplementedError

    def masker_step(self, x, y, domains=None) -> Dict[str, float]:
        hp = self.hparams
        with frozen(self.network):
            m = self.masker(x).float()                             # (B, 1, H, W) in [0, 1]
            # one forward: kept, removed; float32 for the losses (bf16 autocast)
            logits = self.network(self._kept_and_removed(x, m)).float()
            probs = logits.softmax(dim=1)
            p = probs.gather(1, torch.cat([y, y]).view(-1, 1)).view(2, -1)   # (2, B)
            dist = F.mse_loss(p[0] - p[1], torch.ones_like(p[0]))
            area, tv = m.mean(), total_variation(m)
            loss = dist + hp["align_l1"] * area + hp["align_l2"] * tv
            extra = {}
            if self.PENALTY:
                if domains is None:
                    domains = torch.zeros_like(y)  # one domain: no spread to penalise
                penalty = self.masker_penalty(logits[:len(x)], y, domains)
                loss = loss + hp[self.WEIGHT] * penalty
                extra[self.PENALTY] = penalty.item()
            _descend(self.masker_optimizer, self.masker, loss)
        return {"mask_loss": loss.item(), "mask_dist": dist.item(), "mask_l1": area.item(),
                "mask_tv": tv.item(), "mask_area": area.item(), **extra}

    def classifier_step(self, x, y, align_weight: float) -> Dict[str, float]:
        """One classifier update: CE + l4 * L_reg (+ align_weight * alignment if > 0)."""
        hp = self.hparams
        create_graph = hp["align_create_graph"]
        if hp["align_l4"] > 0:
            logits, cam, reg, _ = dre_regulariser(self.network, self.cam_layer, x, y, self.num_classes,
                                                  hp, create_graph=create_graph)
        else:
            cam, logits = grad_cam(self.network, self.cam_layer, x, y, create_graph=create_graph,
                                   detach_weights=not create_graph)
            reg = torch.zeros((), device=x.device)
        ce = F.cross_entropy(logits, y)
        loss = ce + hp["align_l4"] * reg
        out = {"ce": ce.item(), "reg": reg.item(), "align_weight": float(align_weight), "align": 0.0}
        if align_weight > 0:
            align_loss = self.alignment_loss(x, F.relu(cam))
            loss = loss + align_weight * align_loss
            out["align"] = align_loss.item()
        _descend(self.optimizer, self.network, loss)
        out["loss"] = loss.item()
        return out

    def alignment_loss(self, x, cam):
        """BCE(clamp(norm(cam)), pool(M(x))) (`align_loss` l1: mean |norm(cam) - pool(M(x))|):
        cam (B, h, w) ReLU'd; the mask is a constant."""
        with torch.no_grad(), frozen(self.masker):
            target = pool_mask(self.masker(x).float(), cam.shape[-2:], self.hparams["align_target_pool"])
        g = normalize_cam(cam, rel_eps=self.hparams["cam_rel_eps"])
        if self.hparams["align_loss"] == "l1":
            return (g - target).abs().mean()
        if self.hparams["align_loss"] != "bce":
            raise ValueError(f"align_loss must be bce or l1, got {self.hparams['align_loss']!r}")
        with precision.no_autocast(x.device):  # CUDA autocast refuses binary_cross_entropy
            return F.binary_cross_entropy(g.clamp(BCE_EPS, 1 - BCE_EPS), target)

    def align_weight(self, t: int) -> float:
        """Weight of the alignment term at step t (0 before the masker has warmed up)."""
        hp = self.hparams
        start = hp["align_warmup_steps"] + hp["align_masker_warmup_steps"]
        if t < start:
            return 0.0
        ramp = hp["align_l3_ramp_steps"]
        return hp["align_l3"] * (min(1.0, (t - start + 1) / ramp) if ramp > 0 else 1.0)

    # ------------------------------------------------------------------ DomainBed API
    def update(self, minibatches, unlabeled=None):
        x, y, _ = concat_batches(minibatches)
        domains = torch.cat([torch.full_like(b[1], i) for i, b in enumerate(minibatches)])  # (B,)
        hp = self.hparams
        t = int(self.update_count)
        self.update_count += 1
        if t < hp["align_warmup_steps"]:
            with frozen(self.masker):
                return {**dict.fromkeys(MASKER_KEYS, 0.0),
                        **self.classifier_step(x, y, align_weight=0.0)}
        vals: Dict[str, list] = {}
        for _ in range(hp["masker_steps"]):
            for k, v in self.masker_step(x, y, domains).items():
                vals.setdefault(k, []).append(v)
        with frozen(self.masker):
            for _ in range(hp["classifier_steps"]):
                for k, v in self.classifier_step(x, y, self.align_weight(t)).items():
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
