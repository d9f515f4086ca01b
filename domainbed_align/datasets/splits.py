"""DomainBed's per-domain in/out split, shared by the trainer and the explanation CLI."""
import numpy as np

from domainbed_align.lib.misc import seed_hash


def split_indices(n: int, holdout_fraction: float, trial_seed: int, env: int):
    """DomainBed's split: shuffle with seed_hash(trial_seed, env); first part is `out`."""
    keys = list(range(n))
    np.random.RandomState(seed_hash(trial_seed, env)).shuffle(keys)
    n_out = int(n * holdout_fraction)
    return keys[n_out:], keys[:n_out]  # in, out
