"""Input-gradient penalties outside the relevance mask: RRR and GradMask.

- RRR, "Right for the Right Reasons" (Ross et al., IJCAI 2017, https://arxiv.org/abs/1703.03717):
  L = CE + rrr_lambda * mean_i w_i * mean_d ((1 - m_id) * d/dx_id sum_k log p_k(x_i))^2.
- GradMask (Simpson et al., 2019, https://arxiv.org/abs/1904.07478):
  L = CE + gradmask_lambda * mean_i w_i * mean_d |(1 - m_id) * d s_i / dx_id|,
  s_i = z_y (the true-class logit; the paper is binary, one logit) or, with
  `gradmask_target: sum`, the sum of all logits.
w_i is 1 for a mask that is neither empty nor full (`guidable`); the control
`penalise_empty_masks: true` also penalises samples with an empty mask, everywhere.
Both references sum over input features d; we average (the sum divided by D = C*H*W), so one
lambda means the same at 28 and 224 px. The penalised gradient needs create_graph.
"""
import torch.nn.functional as F
from torch import Tensor

from domainbed_align.algorithms.registry import register_algorithm
from domainbed_align.algorithms.guidance import GuidedERM, guidable, input_gradient, weighted_mean
from domainbed_align.lib.errors import ConfigError

GRADMASK_TARGETS = ("true", "sum")


def outside_penalty(g: Tensor, m: Tensor, power: int) -> Tensor:
    """Per-sample mean over features of |(1 - m) * g| ** power; g (B, C, H, W), m (B, 1, H, W)."""
    return ((1 - m) * g).abs().pow(power).flatten(1).mean(dim=1)


def penalty_weight(m: Tensor, hparams: dict) -> Tensor:
    """(B,) weight of each sample's penalty: `guidable` (an empty or full mask steers nothing),
    or, with the `penalise_empty_masks` control, also 1 for an empty mask (penalty everywhere;
    a full mask has no outside, so its penalty is 0 either way)."""
    w = guidable(m)
    if hparams.get("penalise_empty_masks", False):
        w = w.maximum(((m > 0.5).flatten(1).sum(dim=1) == 0).float())
    return w


@register_algorithm
class RRR(GuidedERM):
    """Right for the Right Reasons (Ross et al., IJCAI 2017): squared input gradient outside the mask."""

    NEEDS_MASKS = True

    def losses(self, x, y, m):
        g, logits = input_gradient(self.network, x, lambda z: F.log_softmax(z, dim=1).sum(dim=1),
                                   create_graph=True)
        rrr = weighted_mean(outside_penalty(g, m, 2), penalty_weight(m, self.hparams))
        ce = F.cross_entropy(logits, y)
        return {"ce": ce, "rrr": rrr, "loss": ce + self.hparams["rrr_lambda"] * rrr}


@register_algorithm
class GradMask(GuidedERM):
    """GradMask (Simpson et al., 2019): L1 input gradient of the logit outside the mask."""

    NEEDS_MASKS = True

    def losses(self, x, y, m):
        target = self.hparams["gradmask_target"]
        if target == "true":
            score = lambda z: z.gather(1, y.view(-1, 1))[:, 0]
        elif target == "sum":
            score = lambda z: z.sum(dim=1)
        else:
            raise ConfigError(f"gradmask_target must be one of {', '.join(GRADMASK_TARGETS)}, got {target!r}")
        g, logits = input_gradient(self.network, x, score, create_graph=True)
        gradmask = weighted_mean(outside_penalty(g, m, 1), penalty_weight(m, self.hparams))
        ce = F.cross_entropy(logits, y)
        return {"ce": ce, "gradmask": gradmask, "loss": ce + self.hparams["gradmask_lambda"] * gradmask}
