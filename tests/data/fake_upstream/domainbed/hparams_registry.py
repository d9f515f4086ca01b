import numpy as np

from domainbed.lib import misc


def _define_hparam(hparams, hparam_name, default_val, random_val_fn):
    hparams[hparam_name] = (hparams, hparam_name, default_val, random_val_fn)


def _hparams(algorithm, dataset, random_seed):
    SMALL_IMAGES = ["Debug28", "RotatedMNIST", "ColoredMNIST"]
    hparams = {}

    def _hparam(name, default_val, random_val_fn):
        assert name not in hparams
        random_state = np.random.RandomState(misc.seed_hash(random_seed, name))
        hparams[name] = (default_val, random_val_fn(random_state))

    _hparam("data_augmentation", True, lambda r: True)
    _hparam("resnet18", False, lambda r: False)
    _hparam("resnet50_augmix", True, lambda r: True)
    _hparam("resnet_dropout", 0., lambda r: r.choice([0., 0.1, 0.5]))
    _hparam("class_balanced", False, lambda r: False)
    _hparam("nonlinear_classifier", False, lambda r: bool(r.choice([False, False])))
    if algorithm == "IRM":
        _hparam("irm_lambda", 1e2, lambda r: 10**r.uniform(-1, 5))
    if dataset in SMALL_IMAGES:
        _hparam("lr", 1e-3, lambda r: 10**r.uniform(-4.5, -2.5))
        _hparam("weight_decay", 0., lambda r: 0.)
        _hparam("batch_size", 64, lambda r: int(2**r.uniform(3, 9)))
    else:
        _hparam("lr", 5e-5, lambda r: 10**r.uniform(-5, -3.5))
        _hparam("weight_decay", 0., lambda r: 10**r.uniform(-6, -2))
        _hparam("batch_size", 32, lambda r: int(2**r.uniform(3, 5.5)))
    return hparams


def default_hparams(algorithm, dataset):
    return {a: b for a, (b, c) in _hparams(algorithm, dataset, 0).items()}


def random_hparams(algorithm, dataset, seed):
    return {a: c for a, (b, c) in _hparams(algorithm, dataset, seed).items()}
