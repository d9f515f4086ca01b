"""DomainBed's per-domain split (domainbed-compat.md section 4), pinned on hand-checked cases."""
import hashlib

import numpy as np
import pytest

from domainbed_align.datasets.splits import split_indices


def _domainbed_rule(n, holdout_fraction, trial_seed, env):
    """The rule written from the spec, without the package's seed_hash."""
    seed = int(hashlib.md5(str((trial_seed, env)).encode("utf-8")).hexdigest(), 16) % 2**31
    keys = list(range(n))
    np.random.RandomState(seed).shuffle(keys)
    n_out = int(n * holdout_fraction)
    return keys[n_out:], keys[:n_out]


@pytest.mark.parametrize("n,fraction,trial_seed,env,expected_in,expected_out", [
    # int(10 * 0.2) = 2 held out
    (10, 0.2, 0, 0, [8, 1, 4, 5, 0, 9, 6, 7], [2, 3]),
    # int(10 * 0.3) = int(3.0000000000000004) = 3
    (10, 0.3, 1, 2, [9, 8, 7, 4, 5, 6, 2], [1, 0, 3]),
    # int(7 * 0.5) = int(3.5) = 3: rounds down
    (7, 0.5, 0, 1, [2, 6, 5, 4], [0, 3, 1]),
])
def test_pinned_indices(n, fraction, trial_seed, env, expected_in, expected_out):
    in_idx, out_idx = split_indices(n, fraction, trial_seed, env)
    assert (list(in_idx), list(out_idx)) == (expected_in, expected_out)
    assert (list(in_idx), list(out_idx)) == _domainbed_rule(n, fraction, trial_seed, env)


@pytest.mark.parametrize("n,fraction", [(48, 0.2), (449, 0.2), (450, 0.2), (5, 0.0), (3, 0.9),
                                        (1, 0.5), (0, 0.2)])
def test_disjoint_cover_and_exact_sizes(n, fraction):
    for trial_seed in (0, 3):
        for env in (0, 2):
            in_idx, out_idx = split_indices(n, fraction, trial_seed, env)
            assert len(out_idx) == int(n * fraction)
            assert len(in_idx) == n - int(n * fraction)
            assert not set(in_idx) & set(out_idx)
            assert sorted(in_idx + out_idx) == list(range(n))
            assert (in_idx, out_idx) == _domainbed_rule(n, fraction, trial_seed, env)


def test_seed_and_domain_change_the_split_but_not_its_size():
    a = split_indices(100, 0.2, 0, 0)
    assert split_indices(100, 0.2, 0, 0) == a          # a pure function
    assert split_indices(100, 0.2, 1, 0)[1] != a[1]    # trial seed matters
    assert split_indices(100, 0.2, 0, 1)[1] != a[1]    # so does the domain


def test_train_script_reexports_the_same_function():
    from domainbed_align import train
    assert train.split_indices is split_indices
