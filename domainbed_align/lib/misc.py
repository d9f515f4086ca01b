"""Seeds, hashing and atomic file writes shared by every script."""
import contextlib
import hashlib
import json
import os
import tempfile


def seed_hash(*args) -> int:
    """DomainBed's seed_hash: md5 of repr of the argument tuple, mod 2**31."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2**31)


@contextlib.contextmanager
def atomic_open(path, mode="w", fsync=True):
    """Open a temp file beside `path`; on success rename it over `path` (readers never see half).

    `fsync=False` for small files that can be rebuilt (a thousand fsyncs cost seconds)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str, fsync=True) -> None:
    with atomic_open(path, "w", fsync=fsync) as f:
        f.write(text)


def json_line(record: dict) -> str:
    """One records line as DomainBed writes it: keys sorted."""
    return json.dumps(record, sort_keys=True) + "\n"


# --------------------------------------------------------------------------- upstream helpers
# The public helpers that upstream DomainBed's algorithms and scripts import from
# `domainbed.lib.misc`, with upstream's behaviour, so porting an upstream algorithm is a change
# of import lines. torch is imported inside the functions: the collector imports this module.
def make_weights_for_balanced_classes(dataset):
    """Per-item sampling weight 1 / (count of its class * number of classes), as a tensor."""
    import torch
    labels = [int(item[1]) for item in dataset]
    counts = {}
    for y in labels:
        counts[y] = counts.get(y, 0) + 1
    n_classes = len(counts)
    return torch.tensor([1.0 / (counts[y] * n_classes) for y in labels])


def random_pairs_of_minibatches(minibatches):
    """Domains in a random cycle, each paired with the next, both cut to the shorter length."""
    import torch
    perm = torch.randperm(len(minibatches)).tolist()
    pairs = []
    for i in range(len(minibatches)):
        j = i + 1 if i < len(minibatches) - 1 else 0
        xi, yi = minibatches[perm[i]][0], minibatches[perm[i]][1]
        xj, yj = minibatches[perm[j]][0], minibatches[perm[j]][1]
        n = min(len(xi), len(xj))
        pairs.append(((xi[:n], yi[:n]), (xj[:n], yj[:n])))
    return pairs


def split_meta_train_test(minibatches, num_meta_test=1):
    """Random (meta-train, meta-test) pairs of domains, cut to the shorter length (MLDG)."""
    import numpy as np
    n_domains = len(minibatches)
    perm = np.random.permutation(n_domains)
    pairs = []
    meta_train = perm[:n_domains - num_meta_test]
    meta_test = perm[-num_meta_test:]
    for i, j in zip(meta_train, np.random.choice(meta_test, len(meta_train))):
        xi, yi = minibatches[i][0], minibatches[i][1]
        xj, yj = minibatches[j][0], minibatches[j][1]
        n = min(len(xi), len(xj))
        pairs.append(((xi[:n], yi[:n]), (xj[:n], yj[:n])))
    return pairs


def l2_between_dicts(dict_1, dict_2):
    """Mean squared difference of two dicts of tensors with the same keys (sorted-key order)."""
    import torch
    assert len(dict_1) == len(dict_2)
    a = torch.cat([dict_1[k].view(-1) for k in sorted(dict_1)])
    b = torch.cat([dict_2[k].view(-1) for k in sorted(dict_1)])
    return (a - b).pow(2).mean()


class _SplitDataset:
    """The items `keys` of a dataset (map-style: DataLoader takes it)."""

    def __init__(self, underlying_dataset, keys):
        self.underlying_dataset, self.keys = underlying_dataset, keys

    def __getitem__(self, key):
        return self.underlying_dataset[self.keys[key]]

    def __len__(self):
        return len(self.keys)


def split_dataset(dataset, n, seed=0):
    """Upstream's split: shuffle indices with RandomState(seed); the first n, then the rest."""
    import numpy as np
    assert n <= len(dataset)
    keys = list(range(len(dataset)))
    np.random.RandomState(seed).shuffle(keys)
    return _SplitDataset(dataset, keys[:n]), _SplitDataset(dataset, keys[n:])


class ParamDict(dict):
    """A dict of tensors with element-wise arithmetic: `p + q`, `2 * p`, `p / 3`, `-p`, `p - q`."""

    def _prototype(self, other, op):
        from numbers import Number
        if isinstance(other, Number):
            return ParamDict({k: op(v, other) for k, v in self.items()})
        if isinstance(other, dict):
            return ParamDict({k: op(self[k], other[k]) for k in self})
        raise NotImplementedError

    def __add__(self, other):
        return self._prototype(other, lambda a, b: a + b)

    def __rmul__(self, other):
        return self._prototype(other, lambda a, b: b * a)

    def __mul__(self, other):
        return self._prototype(other, lambda a, b: a * b)

    __radd__ = __add__

    def __neg__(self):
        return ParamDict({k: -v for k, v in self.items()})

    def __rsub__(self, other):
        return self.__neg__().__add__(other)

    def __sub__(self, other):
        return self.__add__(other.__neg__())

    def __truediv__(self, other):
        return self._prototype(other, lambda a, b: a / b)
