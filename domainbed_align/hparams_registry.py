"""Every hyperparameter: its default and its random-search distribution (DomainBed semantics).

Each hparam draws from its own `RandomState(seed_hash(random_seed, name))`, so declaring a new
hparam never changes the draws of the others. Values are native Python types (JSON-safe).
Algorithms declare their block with `@algorithm_hparams("NAME")`; datasets with
`@dataset_hparams("NAME")`. Plug-ins use the same decorators.
"""
from typing import Callable, Dict, Tuple

import numpy as np

from domainbed_align.lib.errors import ConfigError
from domainbed_align.lib.misc import seed_hash

# 28x28 datasets: DomainBed's small-image defaults (lr 1e-3, batch 64, no weight decay).
SMALL_IMAGES = ("Debug28", "SpuriousDigits")

_ALGORITHM_BLOCKS: Dict[str, Callable] = {}
_DATASET_BLOCKS: Dict[str, Callable] = {}


def algorithm_hparams(name: str):
    """Register the hparam block of algorithm `name`: a function `(hparam, dataset) -> None`."""
    def deco(fn):
        if name in _ALGORITHM_BLOCKS:
            raise ValueError(f"hparams of algorithm {name!r} are declared twice")
        _ALGORITHM_BLOCKS[name] = fn
        return fn
    return deco


def dataset_hparams(name: str):
    """Register dataset-specific hparams (data options every algorithm sees)."""
    def deco(fn):
        if name in _DATASET_BLOCKS:
            raise ValueError(f"hparams of dataset {name!r} are declared twice")
        _DATASET_BLOCKS[name] = fn
        return fn
    return deco


def _native(value):
    """numpy scalars -> Python scalars, so records stay JSON-serialisable."""
    return value.item() if isinstance(value, np.generic) else value


def _hparams(algorithm: str, dataset: str, random_seed: int) -> Dict[str, Tuple[object, object]]:
    """name -> (default, random draw) for this algorithm and dataset."""
    hparams: Dict[str, Tuple[object, object]] = {}

    def hparam(name, default, random_fn):
        """Declare one hparam; `random_fn(RandomState)` draws its search value."""
        assert name not in hparams, f"hparam {name} declared twice"
        rs = np.random.RandomState(seed_hash(random_seed, name))
        hparams[name] = (_native(default), _native(random_fn(rs)))

    small = dataset in SMALL_IMAGES

    # --- shared by every algorithm (DomainBed names and ranges) ---
    hparam("data_augmentation", True, lambda r: True)
    hparam("resnet18", False, lambda r: False)
    hparam("resnet_dropout", 0.0, lambda r: r.choice([0.0, 0.1, 0.5]))
    hparam("nonlinear_classifier", False, lambda r: False)
    # ImageNet weights for the ResNet (classic DomainBed); false trains from scratch offline.
    hparam("pretrained", True, lambda r: True)
    # Width of the small CNN used on 28x28 datasets (channels of its last stage).
    hparam("cnn_width", 32, lambda r: 32)
    if small:
        hparam("lr", 1e-3, lambda r: 10 ** r.uniform(-4.5, -2.5))
        hparam("weight_decay", 0.0, lambda r: 0.0)
        hparam("batch_size", 64, lambda r: int(2 ** r.uniform(3, 9)))
    else:
        hparam("lr", 5e-5, lambda r: 10 ** r.uniform(-5, -3.5))
        hparam("weight_decay", 0.0, lambda r: 10 ** r.uniform(-6, -2))
        hparam("batch_size", 32, lambda r: int(2 ** r.uniform(3, 5.5)))

    # --- evaluation: explanation metrics on a fixed subsample of each split (0 = off) ---
    hparam("explain_n", 256, lambda r: 256)
    # RISE deletion / insertion grid: 0 = fractions 0, .01, .05, .1, .2, .5, 1 (the ks);
    # n >= 2 = n evenly spaced fractions (2 forwards per image per interior point).
    hparam("explain_grid_points", 0, lambda r: 0)
    # Pointing-game tolerance (Zhang et al.): pixels at 224 px, scaled by the shorter side.
    hparam("pg_tolerance_px224", 15.0, lambda r: 15.0)

    if dataset in _DATASET_BLOCKS:
        _DATASET_BLOCKS[dataset](hparam)
    if algorithm in _ALGORITHM_BLOCKS:
        _ALGORITHM_BLOCKS[algorithm](hparam, dataset)
    return hparams


def default_hparams(algorithm: str, dataset: str) -> dict:
    return {k: d for k, (d, _) in _hparams(algorithm, dataset, 0).items()}


def random_hparams(algorithm: str, dataset: str, seed: int) -> dict:
    return {k: r for k, (_, r) in _hparams(algorithm, dataset, seed).items()}


def run_hparams(algorithm: str, dataset: str, hparams_seed: int, trial_seed: int,
                overrides: dict = None) -> dict:
    """The hparams of one run: defaults for hparams_seed 0, else seeded draws; then overrides."""
    if hparams_seed == 0:
        hparams = default_hparams(algorithm, dataset)
    else:
        hparams = random_hparams(algorithm, dataset, seed_hash(hparams_seed, trial_seed))
    for key, value in (overrides or {}).items():
        if key not in hparams:
            raise ConfigError(f"unknown hparam {key!r} for {algorithm} on {dataset}; "
                              f"known: {', '.join(sorted(hparams))}")
        hparams[key] = value
    return hparams


# ----------------------------------------------------------------------------- datasets
@dataset_hparams("SpuriousDigits")
def _spurious_digits(hparam):
    # Probability-of-agreement table of the coloured corner cue is fixed by the benchmark;
    # this switch removes the cue entirely (the "clean" variant).
    hparam("digits_spurious", True, lambda r: True)
    # Masks handed to mask-based methods: gt, dilated, shifted, partial or random.
    hparam("mask_quality", "gt", lambda r: "gt")


# ----------------------------------------------------------------------------- algorithms
@algorithm_hparams("ERM")
def _erm(hparam, dataset):
    pass


def _dre_weights(hparam):
    """DRE's internal weights (its public code): consistency 1.0, sparsity 0.5, mixed CE 0.1."""
    hparam("dre_consistency_weight", 1.0, lambda r: 1.0)
    hparam("dre_sparsity_weight", 0.5, lambda r: 0.5)
    hparam("dre_ce_weight", 0.1, lambda r: 0.1)
    hparam("dre_mix_alpha", 0.2, lambda r: 0.2)  # lambda ~ Beta(alpha, alpha)
    # Min-max of Grad-CAMs in training losses: a map whose range is below this fraction of the
    # batch's mean range is not stretched to [0, 1] (its 1/range gradients diverge).
    hparam("cam_rel_eps", 1e-2, lambda r: 1e-2)


@algorithm_hparams("DRE")
def _dre(hparam, dataset):
    hparam("dre_weight", 1.0, lambda r: 10 ** r.uniform(-1, 1))
    _dre_weights(hparam)


@algorithm_hparams("ALIGN")
def _align(hparam, dataset):
    small = dataset in SMALL_IMAGES
    # l1..l4 of the paper: mask area, mask smoothness, Grad-CAM/mask alignment, DRE's L_reg.
    hparam("align_l1", 0.1, lambda r: 10 ** r.uniform(-2, 0))
    hparam("align_l2", 0.1, lambda r: 10 ** r.uniform(-2, 0))
    hparam("align_l3", 1.0, lambda r: 10 ** r.uniform(-1, 1))
    hparam("align_l4", 1.0, lambda r: 10 ** r.uniform(-1, 1))
    # The paper warms up 200 epochs; we count DomainBed steps (5001 per run by default). On
    # SpuriousDigits 1000 steps is ~180 epochs; aligning a classifier that has not learned its
    # task yet drags it to chance (measured: warm-up 100, clean digits, H100).
    warmup = 1000 if small else 2000
    hparam("align_warmup_steps", warmup, lambda r: int(r.choice([warmup // 2, warmup, 2 * warmup])))
    hparam("masker_steps", 1, lambda r: int(r.choice([1, 2])))
    hparam("classifier_steps", 1, lambda r: int(r.choice([1, 2])))
    hparam("masker_lr", None, lambda r: None)  # None: the classifier's lr
    hparam("masker_width", 16 if small else 32, lambda r: 16 if small else 32)
    hparam("mask_fill", "zero", lambda r: "zero")  # or "blur"
    # Differentiable Grad-CAM (alignment reaches the head); false detaches the channel weights.
    hparam("align_create_graph", True, lambda r: True)
    _dre_weights(hparam)
