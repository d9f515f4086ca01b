"""DomainBed's dataset contract and the per-domain datasets it holds.

A per-domain dataset returns `(x, y)` or, when it has masks, `(x, y, m)` with m (1, H, W) in
[0, 1]. `eval_view()` gives the same items without augmentation and with ground-truth masks
(the masks a mask-based method trains on may be degraded on purpose, see SpuriousDigits).
"""
from typing import List, Optional, Sequence

import torch
from torch.utils.data import Dataset

from domainbed_align.catalog import DATASET_ENVIRONMENTS


class MultipleDomainDataset:
    """A list of per-domain datasets plus DomainBed's class attributes."""

    N_STEPS = 5001           # default number of steps
    CHECKPOINT_FREQ = 100    # default steps between records
    N_WORKERS = 8            # data-loader processes
    ENVIRONMENTS: Sequence[str] = ()
    INPUT_SHAPE: Optional[Sequence[int]] = None
    HAS_MASKS = False        # True when items are (x, y, m)

    def __init__(self):
        self.datasets: List[Dataset] = []
        self.input_shape: Sequence[int] = self.INPUT_SHAPE
        self.num_classes: int = 0

    def __getitem__(self, index: int) -> Dataset:
        return self.datasets[index]

    def __len__(self) -> int:
        return len(self.datasets)

    @classmethod
    def environments(cls, data_dir: Optional[str] = None) -> Sequence[str]:
        """Table column names in domain order; `data_dir` for datasets named by their folders
        (DomainFolder)."""
        return DATASET_ENVIRONMENTS.get(cls.__name__, cls.ENVIRONMENTS)


class TensorDomain(Dataset):
    """One domain held in memory; batches are gathered by indexing, no DataLoader needed.

    Args:
        x: (N, C, H, W) float images, already normalised.
        y: (N,) int64 labels.
        masks: (N, 1, H, W) masks given to training, or None.
        eval_masks: (N, 1, H, W) ground-truth masks for evaluation (default: `masks`).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, masks: Optional[torch.Tensor] = None,
                 eval_masks: Optional[torch.Tensor] = None):
        self.x, self.y, self.masks = x, y, masks
        self.eval_masks = masks if eval_masks is None else eval_masks

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return tuple(t[0] for t in self.batch(torch.as_tensor([i])))

    def batch(self, idx: torch.Tensor):
        """Items `idx` stacked: (x, y) or (x, y, m)."""
        if self.masks is None:
            return self.x[idx], self.y[idx]
        return self.x[idx], self.y[idx], self.masks[idx]

    def eval_view(self) -> "TensorDomain":
        return TensorDomain(self.x, self.y, self.eval_masks) if self.masks is not None else self
