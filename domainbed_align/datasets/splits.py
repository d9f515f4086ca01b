"""DomainBed's per-domain in/out split, shared by the trainer and the explanation CLI, and our
optional third part, the ID test split."""
import numpy as np

from domainbed_align.lib.misc import seed_hash


def _shuffled(n: int, trial_seed: int, env: int) -> list:
    keys = list(range(n))
    np.random.RandomState(seed_hash(trial_seed, env)).shuffle(keys)
    return keys


def split_indices(n: int, holdout_fraction: float, trial_seed: int, env: int):
    """DomainBed's split: shuffle with seed_hash(trial_seed, env); first part is `out`."""
    keys = _shuffled(n, trial_seed, env)
    n_out = int(n * holdout_fraction)
    return keys[n_out:], keys[:n_out]  # in, out


def split_indices_with_idtest(n: int, holdout_fraction: float, idtest_fraction: float,
                              trial_seed: int, env: int):
    """(in, out, idtest): the same shuffle as `split_indices`, so `out` is exactly DomainBed's;
    the next int(n * idtest_fraction) keys become the ID test split, the rest is `in`.

    Why a third part: model selection maximises accuracy on `out` over checkpoints and hparams,
    so `out` accuracy of the selected model is optimistic; `idtest` is never looked at by
    training or selection, so its accuracy is an unbiased in-distribution estimate."""
    keys = _shuffled(n, trial_seed, env)
    n_out, n_idtest = int(n * holdout_fraction), int(n * idtest_fraction)
    return keys[n_out + n_idtest:], keys[:n_out], keys[n_out:n_out + n_idtest]


def domain_splits(n: int, env: int, trial_seed: int, holdout_fraction: float,
                  idtest_fraction: float = 0.0, test_envs=()) -> dict:
    """Split name -> indices of one domain of a run: DomainBed's `in`/`out` everywhere and,
    with an `idtest_fraction`, `idtest` too on training domains (test domains keep upstream's
    two parts, so OOD numbers do not move)."""
    if idtest_fraction and env not in test_envs:
        in_idx, out_idx, idtest_idx = split_indices_with_idtest(
            n, holdout_fraction, idtest_fraction, trial_seed, env)
        return {"in": in_idx, "out": out_idx, "idtest": idtest_idx}
    in_idx, out_idx = split_indices(n, holdout_fraction, trial_seed, env)
    return {"in": in_idx, "out": out_idx}
