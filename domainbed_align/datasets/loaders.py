"""Deterministic, resumable batch streams.

The batch of training step t is a pure function of (seed, domain, t): its indices (drawn with
replacement, as DomainBed's InfiniteDataLoader does) and a per-item seed for the random
augmentation both come from a generator seeded by `seed_hash(seed, domain, t)`. So a run resumed
at step t sees exactly the batches an unbroken run sees, whatever the number of workers, and the
checkpoint needs no loader state.
"""
import os
from typing import Iterator, List, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from domainbed_align.datasets.base import TensorDomain
from domainbed_align.lib.misc import seed_hash


def step_batch(n: int, batch_size: int, seed: int, domain: int, step: int, weights=None):
    """(indices into the split, per-item augmentation seeds) for one training step.

    With `weights` (n,) the indices are drawn in proportion to them (DomainBed's
    `class_balanced`: a WeightedRandomSampler with replacement), else uniformly.
    """
    g = torch.Generator().manual_seed(seed_hash(seed, domain, step))
    if weights is None:
        idx = torch.randint(n, (batch_size,), generator=g)
    else:
        idx = torch.multinomial(weights, batch_size, replacement=True, generator=g)
    item_seeds = torch.randint(2**31 - 1, (batch_size,), generator=g)
    return idx, item_seeds


class _StepSampler(Sampler):
    """Yields, for steps start_step, start_step+1, ..., the list of (index, item_seed) pairs."""

    def __init__(self, indices: Sequence[int], batch_size, seed, domain, start_step, weights=None):
        self.indices = torch.as_tensor(indices)
        self.batch_size, self.seed, self.domain, self.start_step = batch_size, seed, domain, start_step
        self.weights = weights

    def __iter__(self):
        step = self.start_step
        while True:
            idx, seeds = step_batch(len(self.indices), self.batch_size, self.seed, self.domain, step,
                                    self.weights)
            yield list(zip(self.indices[idx].tolist(), seeds.tolist()))
            step += 1


class _Seeded(Dataset):
    """Runs the wrapped dataset's random transforms under a per-item seed."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, index_and_seed):
        index, item_seed = index_and_seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            return self.dataset[index]

    def __len__(self):
        return len(self.dataset)


def labels_of(dataset: Dataset) -> torch.Tensor:
    """Every item's label without decoding images (in-memory y, or an image folder's items)."""
    if isinstance(dataset, TensorDomain):
        return dataset.y
    if hasattr(dataset, "labels"):  # image folders: the index's label array
        return torch.as_tensor(dataset.labels)
    if hasattr(dataset, "items"):
        return torch.as_tensor([label for _, label in dataset.items])
    return torch.as_tensor([int(item[1]) for item in dataset])


def class_balanced_weights(dataset: Dataset, split: Sequence[int]) -> torch.Tensor:
    """DomainBed's `make_weights_for_balanced_classes` over the items `split` of `dataset`."""
    from domainbed_align.lib.misc import make_weights_for_balanced_classes
    labels = labels_of(dataset)[torch.as_tensor(split, dtype=torch.long)]
    return make_weights_for_balanced_classes([(None, y) for y in labels.tolist()])


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (what SLURM's --cpus-per-task grants),
    not the node's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def loader_workers(n_streams: int, cores: Optional[int] = None) -> int:
    """Data-loader workers per training domain: the usable cores less one for the training
    loop, shared by the `n_streams` per-domain loaders; at least 1. (DomainBed starts 8 per
    domain whatever the node has: 24 processes on a 3-domain run.)"""
    cores = usable_cores() if cores is None else cores
    return max(1, (cores - 1) // max(1, n_streams))


def train_batches(domains: List[Dataset], splits: List[Sequence[int]], batch_size: int,
                  seed: int, start_step: int, num_workers: int,
                  class_balanced: bool = False, pin_memory: bool = False) -> Iterator[list]:
    """Infinite stream of per-step lists with one batch per training domain.

    Image folders load in `num_workers` persistent worker processes per domain, into pinned
    (page-locked) memory with `pin_memory` (CUDA: the copy to the GPU runs asynchronously)."""
    streams = []
    for d, (dataset, split) in enumerate(zip(domains, splits)):
        weights = class_balanced_weights(dataset, split) if class_balanced else None
        if isinstance(dataset, TensorDomain):  # in memory: gather by indexing, no workers
            streams.append(_tensor_stream(dataset, torch.as_tensor(split), batch_size, seed, d, start_step,
                                          weights))
        else:
            loader = DataLoader(_Seeded(dataset), num_workers=num_workers, pin_memory=pin_memory,
                                batch_sampler=_StepSampler(split, batch_size, seed, d, start_step, weights),
                                persistent_workers=num_workers > 0)
            streams.append(iter(loader))
    while True:
        yield [next(s) for s in streams]


def _tensor_stream(dataset: TensorDomain, split: torch.Tensor, batch_size, seed, domain, start_step,
                   weights=None):
    step = start_step
    while True:
        idx, _ = step_batch(len(split), batch_size, seed, domain, step, weights)
        yield dataset.batch(split[idx])
        step += 1


def eval_batches(dataset: Dataset, indices: Sequence[int], batch_size: int, num_workers: int):
    """The items `indices` of an (un-augmented) dataset in order, in batches."""
    indices = torch.as_tensor(indices, dtype=torch.long)
    if isinstance(dataset, TensorDomain):
        for start in range(0, len(indices), batch_size):
            yield dataset.batch(indices[start:start + batch_size])
        return
    loader = DataLoader(torch.utils.data.Subset(dataset, indices.tolist()), batch_size=batch_size,
                        num_workers=num_workers, shuffle=False)
    yield from loader
