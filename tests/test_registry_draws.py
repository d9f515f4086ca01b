"""The hparam registry's random search: pinned draws, and each hparam's own distribution."""
import hashlib

import numpy as np
import pytest

from domainbed_align import hparams_registry as reg


def _stream(seed, name):
    """DomainBed: each hparam draws from RandomState(seed_hash(random_seed, name))."""
    return np.random.RandomState(int(hashlib.md5(str((seed, name)).encode()).hexdigest(), 16) % 2**31)


SHARED_FIXED = {"data_augmentation": True, "resnet18": False, "nonlinear_classifier": False,
                "pretrained": True, "cnn_width": 32, "explain_n": 256,
                "explain_grid_points": 0, "pg_tolerance_px224": 15.0}

# name -> draw, written from the registry's documented ranges (DomainBed's for the shared ones)
SMALL = {"resnet_dropout": lambda r: r.choice([0.0, 0.1, 0.5]),
         "lr": lambda r: 10 ** r.uniform(-4.5, -2.5),
         "weight_decay": lambda r: 0.0,
         "batch_size": lambda r: int(2 ** r.uniform(3, 9))}
LARGE = {"resnet_dropout": lambda r: r.choice([0.0, 0.1, 0.5]),
         "lr": lambda r: 10 ** r.uniform(-5, -3.5),
         "weight_decay": lambda r: 10 ** r.uniform(-6, -2),
         "batch_size": lambda r: int(2 ** r.uniform(3, 5.5))}
ALIGN_RANGES = {"align_l1": lambda r: 10 ** r.uniform(-2, 0),
                "align_l2": lambda r: 10 ** r.uniform(-2, 0),
                "align_l3": lambda r: 0.1 * 10 ** r.uniform(-1, 1),  # around the measured 0.1
                "align_l4": lambda r: 10 ** r.uniform(-1, 1),
                "masker_steps": lambda r: int(r.choice([1, 2])),
                "classifier_steps": lambda r: 1,  # ERM's updates per step, never drawn
                "align_target_pool": lambda r: "avg"}
DRE_FIXED = {"dre_consistency_weight": 1.0, "dre_sparsity_weight": 0.5, "dre_ce_weight": 0.1,
             "dre_mix_alpha": 0.2, "dre_cam_rel_eps": 0.0}


@pytest.mark.parametrize("seed", [1, 3, 6, 12345])
def test_shared_ranges_are_the_documented_distributions(seed):
    for dataset, ranges in (("SpuriousDigits", SMALL), ("Debug28", SMALL), ("VLCS", LARGE)):
        hp = reg.random_hparams("ERM", dataset, seed)
        for name, draw in ranges.items():
            assert hp[name] == draw(_stream(seed, name)), (dataset, name)
        for name, value in SHARED_FIXED.items():
            assert hp[name] == value and type(hp[name]) is type(value), name


@pytest.mark.parametrize("seed", [1, 7])
def test_align_and_dre_ranges(seed):
    for dataset, schedule, width in (("SpuriousDigits", (1000, 200, 200), 16),
                                     ("VLCS", (2000, 400, 400), 32)):
        hp = reg.random_hparams("ALIGN", dataset, seed)
        for name, draw in ALIGN_RANGES.items():
            assert hp[name] == draw(_stream(seed, name)), name
        for name, steps in zip(("align_warmup_steps", "align_masker_warmup_steps",
                                "align_l3_ramp_steps"), schedule):
            assert hp[name] == int(_stream(seed, name).choice([steps // 2, steps, 2 * steps])), name
        assert hp["cam_rel_eps"] == 1e-2
        assert hp["masker_width"] == width
        assert (hp["masker_lr"], hp["mask_fill"], hp["align_create_graph"]) == (None, "zero", True)
        assert {k: hp[k] for k in DRE_FIXED} == DRE_FIXED
        dre = reg.random_hparams("DRE", dataset, seed)
        assert dre["dre_weight"] == 10 ** _stream(seed, "dre_weight").uniform(-1, 1)
        assert {k: dre[k] for k in DRE_FIXED} == DRE_FIXED


def test_pinned_draws():
    """Literal values for a few seeds (a change of stream or range shows up here)."""
    hp = reg.random_hparams("ERM", "SpuriousDigits", 1)
    assert (hp["lr"], hp["batch_size"], hp["resnet_dropout"], hp["weight_decay"]) == \
        (8.511453013879485e-05, 228, 0.5, 0.0)
    hp = reg.random_hparams("ERM", "SpuriousDigits", 2)
    assert (hp["lr"], hp["batch_size"], hp["resnet_dropout"]) == (4.670599081369679e-05, 12, 0.5)
    hp = reg.random_hparams("ALIGN", "SpuriousDigits", 1)
    assert (hp["align_l1"], hp["align_l2"], hp["align_l3"], hp["align_l4"]) == \
        (0.262610870144773, 0.8518837995650914, 0.14675481633652374, 9.289891633512905)
    assert (hp["align_warmup_steps"], hp["masker_steps"], hp["classifier_steps"]) == (1000, 1, 1)
    hp = reg.random_hparams("ALIGN", "SpuriousDigits", 2)
    assert (hp["align_l1"], hp["align_l2"], hp["masker_steps"]) == \
        (0.05699368795625091, 0.012116321491235359, 2)
    assert reg.random_hparams("DRE", "SpuriousDigits", 1)["dre_weight"] == 0.12701544360240088
    assert reg.random_hparams("DRE", "SpuriousDigits", 2)["dre_weight"] == 0.1075384241707332


def test_defaults():
    small = reg.default_hparams("ALIGN", "SpuriousDigits")
    assert {k: small[k] for k in ("align_l1", "align_l2", "align_l3", "align_l4",
                                  "align_warmup_steps", "masker_steps", "classifier_steps",
                                  "masker_lr", "masker_width", "mask_fill",
                                  "align_create_graph")} == \
        {"align_l1": 0.1, "align_l2": 0.1, "align_l3": 0.1, "align_l4": 1.0,
         "align_warmup_steps": 1000, "masker_steps": 1, "classifier_steps": 1, "masker_lr": None,
         "masker_width": 16, "mask_fill": "zero", "align_create_graph": True}
    assert (small["align_masker_warmup_steps"], small["align_l3_ramp_steps"],
            small["align_target_pool"], small["cam_rel_eps"]) == (200, 200, "avg", 1e-2)
    big = reg.default_hparams("ALIGN", "VLCS")
    assert (big["align_warmup_steps"], big["masker_width"]) == (2000, 32)
    assert (big["align_masker_warmup_steps"], big["align_l3_ramp_steps"], big["align_l3"]) == \
        (400, 400, 0.1)
    assert reg.default_hparams("DRE", "VLCS")["dre_weight"] == 1.0
    assert {k: reg.default_hparams("DRE", "VLCS")[k] for k in DRE_FIXED} == DRE_FIXED
    for name, value in {**SHARED_FIXED, "resnet_dropout": 0.0}.items():
        assert reg.default_hparams("ERM", "VLCS")[name] == value
    digits = reg.default_hparams("ERM", "SpuriousDigits")
    assert (digits["digits_spurious"], digits["mask_quality"]) == (True, "gt")
    assert "digits_spurious" not in reg.default_hparams("ERM", "VLCS")
    assert "align_l1" not in reg.default_hparams("ERM", "SpuriousDigits")


def test_numpy_values_become_python_scalars():
    assert reg._native(np.float64(0.5)) == 0.5 and type(reg._native(np.float64(0.5))) is float
    assert type(reg._native(np.int64(3))) is int
    assert type(reg._native(np.bool_(True))) is bool
    assert reg._native("x") == "x" and reg._native(None) is None


def test_run_hparams_uses_seed_hash_of_both_seeds():
    expected = reg.random_hparams("ALIGN", "SpuriousDigits",
                                  int(hashlib.md5(b"(3, 1)").hexdigest(), 16) % 2**31)
    assert reg.run_hparams("ALIGN", "SpuriousDigits", 3, 1) == expected
    assert reg.run_hparams("ALIGN", "SpuriousDigits", 3, 1, {}) == expected
    assert reg.run_hparams("ALIGN", "SpuriousDigits", 0, 5, None) == \
        reg.default_hparams("ALIGN", "SpuriousDigits")


def test_resnet_dropout_takes_each_of_its_values():
    assert {reg.random_hparams("ERM", "VLCS", s)["resnet_dropout"] for s in range(1, 7)} == \
        {0.0, 0.1, 0.5}


def test_unknown_override_message_lists_every_known_name():
    known = ", ".join(sorted(reg.default_hparams("ERM", "Debug28")))
    with pytest.raises(reg.ConfigError) as e:
        reg.run_hparams("ERM", "Debug28", 0, 0, {"lrr": 1})
    assert str(e.value) == f"unknown hparam 'lrr' for ERM on Debug28; known: {known}"


def test_declaring_twice_is_refused():
    with pytest.raises(ValueError, match="hparams of algorithm 'ERM' are declared twice"):
        reg.algorithm_hparams("ERM")(lambda hparam, dataset: None)
    with pytest.raises(ValueError, match="hparams of dataset 'SpuriousDigits' are declared twice"):
        reg.dataset_hparams("SpuriousDigits")(lambda hparam: None)


def test_plugin_blocks_are_used_and_returned(monkeypatch):
    monkeypatch.setattr(reg, "_ALGORITHM_BLOCKS", dict(reg._ALGORITHM_BLOCKS))
    monkeypatch.setattr(reg, "_DATASET_BLOCKS", dict(reg._DATASET_BLOCKS))

    def block(hparam, dataset):
        hparam("my_weight", 2, lambda r: int(r.choice([3, 4])))
    assert reg.algorithm_hparams("MyAlg")(block) is block

    def data_block(hparam):
        hparam("my_data_opt", "a", lambda r: "b")
    assert reg.dataset_hparams("MyData")(data_block) is data_block
    assert reg.default_hparams("MyAlg", "MyData")["my_weight"] == 2
    assert reg.random_hparams("MyAlg", "MyData", 5)["my_weight"] == \
        int(_stream(5, "my_weight").choice([3, 4]))
    assert reg.random_hparams("MyAlg", "MyData", 5)["my_data_opt"] == "b"
    with pytest.raises(AssertionError, match="hparam lr declared twice"):
        reg.algorithm_hparams("Clash")(lambda hparam, dataset: hparam("lr", 1, lambda r: 1))
        reg.default_hparams("Clash", "VLCS")
