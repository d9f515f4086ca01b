"""DomainBed semantics of the hparam registry: seed_hash, per-hparam streams, upstream values."""
import json

import pytest

from domainbed_align import hparams_registry
from domainbed_align.algorithms import ALGORITHMS
from domainbed_align.datasets import DATASETS
from domainbed_align.lib.errors import ConfigError
from domainbed_align.lib.misc import seed_hash


def test_seed_hash_is_md5_of_repr():
    import hashlib
    assert seed_hash(0, 1) == int(hashlib.md5(b"(0, 1)").hexdigest(), 16) % 2**31
    assert seed_hash("VLCS", "ERM", [1, 2], 1, 0) == \
        int(hashlib.md5(b"('VLCS', 'ERM', [1, 2], 1, 0)").hexdigest(), 16) % 2**31


def test_upstream_erm_vlcs_draw():
    hp = hparams_registry.random_hparams("ERM", "VLCS", seed_hash(1, 0))
    assert hp["batch_size"] == 39
    assert f"{hp['lr']:.4e}" == "2.7029e-05"
    assert f"{hp['weight_decay']:.4e}" == "4.4833e-04"
    assert hp["resnet_dropout"] == 0.5


def test_upstream_defaults():
    big = hparams_registry.default_hparams("ERM", "VLCS")
    assert (big["lr"], big["weight_decay"], big["batch_size"], big["resnet_dropout"]) == (5e-5, 0.0, 32, 0.0)
    small = hparams_registry.default_hparams("ERM", "SpuriousDigits")
    assert (small["lr"], small["weight_decay"], small["batch_size"]) == (1e-3, 0.0, 64)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_values_are_native_and_json_safe(algorithm, dataset):
    for seed in (0, 1, 7):
        hp = hparams_registry.random_hparams(algorithm, dataset, seed)
        assert json.loads(json.dumps(hp)) == hp
        for v in hp.values():
            assert type(v) in (bool, int, float, str, type(None)), (algorithm, dataset, v)  # None: "inherit"
    assert set(hparams_registry.default_hparams(algorithm, dataset)) == set(hp)


def test_random_ranges_small_images():
    for seed in range(50):
        hp = hparams_registry.random_hparams("ERM", "SpuriousDigits", seed)
        assert 10**-4.5 <= hp["lr"] <= 10**-2.5
        assert 8 <= hp["batch_size"] <= 512
        assert hp["weight_decay"] == 0


def test_run_hparams_seed_zero_is_default_and_overrides_apply():
    assert hparams_registry.run_hparams("ERM", "VLCS", 0, 3) == hparams_registry.default_hparams("ERM", "VLCS")
    hp = hparams_registry.run_hparams("ERM", "VLCS", 2, 1, {"lr": 0.5})
    assert hp["lr"] == 0.5
    expected = hparams_registry.random_hparams("ERM", "VLCS", seed_hash(2, 1))
    assert hp["batch_size"] == expected["batch_size"]


def test_unknown_override_lists_known():
    with pytest.raises(ConfigError, match="unknown hparam 'lrr'.*lr"):
        hparams_registry.run_hparams("ERM", "VLCS", 0, 0, {"lrr": 1})
