"""The DomainBed `Algorithm` contract, shared batch helpers, and ERM."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from domainbed_align import networks
from domainbed_align.lib import precision

# One training-domain batch: (x, y), or (x, y, m) with m: (B, 1, H, W) relevance in [0, 1].
Batch = Union[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor, Tensor]]


class Algorithm(nn.Module):
    """A domain-generalisation method: `update` does one step, `predict` returns logits.

    Subclasses own their optimisers (any `torch.optim.Optimizer` attribute is checkpointed) and
    keep counters as buffers so that a resumed run continues exactly.

    Args:
        input_shape: e.g. (3, 224, 224).
        num_classes: number of labels.
        num_domains: number of *training* domains.
        hparams: plain dict from `hparams_registry`.
    """

    NEEDS_MASKS = False  # True: update() needs (x, y, m) batches

    def __init__(self, input_shape: Sequence[int], num_classes: int, num_domains: int,
                 hparams: dict):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.num_domains = num_domains
        self.hparams = hparams

    def update(self, minibatches: List[Batch], unlabeled=None) -> Dict[str, float]:
        raise NotImplementedError

    def predict(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    # --- pieces shared by the algorithm families -------------------------------------------
    def _build_classifier(self) -> None:
        """Featurizer + linear head, the DomainBed network; `cam_layer` is where Grad-CAM looks."""
        self.featurizer = networks.Featurizer(self.input_shape, self.hparams)
        self.classifier = networks.Classifier(self.featurizer.n_outputs, self.num_classes,
                                              self.hparams["nonlinear_classifier"])
        # Float32Output: logits leave a bf16 autocast region as float32 (lib/precision.py)
        self.network = nn.Sequential(self.featurizer, self.classifier, precision.Float32Output())

    def _adam(self, params, lr: Optional[float] = None) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.hparams["lr"] if lr is None else lr,
                                weight_decay=self.hparams["weight_decay"])

    @property
    def cam_layer(self) -> nn.Module:
        """Module whose output Grad-CAM explains (ResNet layer4, the small CNN's last stage)."""
        return self.featurizer.cam_layer

    def learned_mask(self, x: Tensor) -> Optional[Tensor]:
        """(B, 1, H, W) mask in [0, 1] that the method learned (ALIGN's masker); None if none."""
        return None

    def explanation_extras(self, x: Tensor, y: Tensor, m: Optional[Tensor]) -> Dict[str, float]:
        """Extra per-split metrics recorded at checkpoints (ALIGN: its learned mask)."""
        return {}

    def optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        """Every optimiser this algorithm owns, by attribute name (for checkpoints)."""
        return {name: value for name, value in sorted(vars(self).items())
                if isinstance(value, torch.optim.Optimizer)}


def concat_batches(minibatches: List[Batch]) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Stack the per-domain batches: x (B, C, H, W), y (B,), m (B, 1, H, W) or None."""
    x = torch.cat([b[0] for b in minibatches])
    y = torch.cat([b[1] for b in minibatches])
    m = torch.cat([b[2] for b in minibatches]) if len(minibatches[0]) > 2 else None
    return x, y, m


def step(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    """Backward and optimiser step, with autocast off (float32 optimiser, lib/precision.py)."""
    with precision.no_autocast(loss.device):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


from domainbed_align.algorithms.registry import register_algorithm  # noqa: E402


@register_algorithm
class ERM(Algorithm):
    """Empirical Risk Minimization (Vapnik 1998), the DomainBed baseline."""

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self._build_classifier()
        self.optimizer = self._adam(self.network.parameters())

    def update(self, minibatches, unlabeled=None):
        x, y, _ = concat_batches(minibatches)
        loss = F.cross_entropy(self.predict(x), y)
        step(self.optimizer, loss)
        return {"loss": loss.item()}

    def predict(self, x):
        return self.network(x)
