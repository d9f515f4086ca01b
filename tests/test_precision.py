"""bfloat16 training (hparam `precision`, lib/precision.py) against float32 on fixed weights.

Tolerances come from bfloat16's resolution: 8 significant bits, unit roundoff u = 2**-8. A
quantity computed from bf16 activations carries a relative error of order u (roundings along a
few layers partly cancel in the sums). We allow 4u = 1.6% of a term's scale: the larger of
its float32 value and the natural scale of its ingredients (1 for probabilities, losses of
order 1, maps min-maxed to [0, 1]); measured errors are at most ~1u on O(1) terms (terms that are
differences of near-equal numbers, SGT's KL, CARE's inner - outer, have large *relative* error
and are held to the absolute bound). Losing a term, a wrong layout or fp16-style overflow would
move a term by far more. Everything runs on the CPU, whose autocast also computes convolutions
and matrix products in bfloat16.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from domainbed_align import hparams_registry
from domainbed_align.algorithms import ALGORITHMS, get_algorithm_class
from domainbed_align.explain.gradcam import grad_cam, grad_cam_parts, normalize_cam
from domainbed_align.explain.metrics import explanation_metrics, metric_grid
from domainbed_align.lib import precision
from domainbed_align.lib.errors import ConfigError

U = 2.0 ** -8          # bfloat16 unit roundoff
TOL = 4 * U            # see the module docstring
SMALL = ("SpuriousDigits", (3, 28, 28), 10, {})
RESNET = ("VLCS", (3, 48, 48), 5, {"pretrained": False, "resnet18": True})  # layer4: 2x2
# On the ResNet (channels-last, frozen BatchNorm) the algorithms that use the network in
# different ways: plain, input gradients, features directly, Grad-CAM + masker + DRE.
RESNET_ALGORITHMS = ("ERM", "SGT", "ActDiff", "ALIGN")


def _hparams(name, dataset, extra, prec):
    hp = hparams_registry.default_hparams(name, dataset)
    hp.update(extra, precision=prec)
    for key in hp:  # every term from the first update (ALIGN: masker and alignment on)
        if key.endswith("_warmup_steps") or key.endswith("_ramp_steps"):
            hp[key] = 0
    return hp


def _build(name, setting, prec):
    dataset, shape, k, extra = setting
    torch.manual_seed(0)
    return get_algorithm_class(name)(shape, k, 3, _hparams(name, dataset, extra, prec)).train()


def _batches(setting, per_domain=None, seed=1):
    """(x, y, m) per training domain; m an off-centre rectangle (mask-based methods)."""
    _, (c, h, w), k, _ = setting
    per_domain = per_domain or (8 if h == 28 else 4)
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(per_domain, 1, h, w)
    m[:, :, h // 4:3 * h // 4, w // 3:5 * w // 6] = 1
    return [(torch.randn(per_domain, c, h, w, generator=g), torch.randint(0, k, (per_domain,), generator=g), m)
            for _ in range(3)]


def _update(alg, batches, prec):
    """One update at the same weights and random draws; the returned terms are pre-step values."""
    torch.manual_seed(2)
    with precision.autocast(prec, "cpu"):
        return alg.update(batches if alg.NEEDS_MASKS else [b[:2] for b in batches])


# ------------------------------------------------------------------ loss terms
@pytest.mark.parametrize("name,setting", [(n, SMALL) for n in ALGORITHMS]
                         + [(n, RESNET) for n in RESNET_ALGORITHMS],
                         ids=[f"{n}-small_cnn" for n in ALGORITHMS] + [f"{n}-resnet18" for n in RESNET_ALGORITHMS])
def test_every_loss_term_under_bf16_matches_float32(name, setting):
    batches = _batches(setting)
    ref = _update(_build(name, setting, "fp32"), batches, "fp32")
    got = _update(_build(name, setting, "bf16"), batches, "bf16")
    assert got.keys() == ref.keys()
    for key, value in ref.items():
        assert abs(got[key] - value) <= TOL * max(abs(value), 1.0), (key, value, got[key])


def test_bf16_really_runs_the_network_in_bf16_and_terms_leave_it_as_float32():
    """The comparison above is not vacuous: the CAM layer's activations are bfloat16 under
    the autocast, while Grad-CAM's outputs, logits and ALIGN's mask enter the losses as float32."""
    alg = _build("ALIGN", RESNET, "bf16")
    seen = []
    alg.cam_layer.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    x, y, _ = _batches(RESNET)[0]
    with precision.autocast("bf16", "cpu"):
        cam, logits = grad_cam(alg.network, alg.cam_layer, x, y, create_graph=True)
        mask = alg.masker(x)
        terms = alg.classifier_step(x, y, align_weight=0.1)
    assert set(seen) == {torch.bfloat16}
    assert (cam.dtype, logits.dtype, alg.predict(x).dtype) == (torch.float32,) * 3
    assert mask.dtype == torch.bfloat16  # the masker's raw output; masker_step casts it
    assert all(isinstance(v, float) for v in terms.values())


# ------------------------------------------------------------------ optimiser state
@pytest.mark.parametrize("name,setting", [(n, SMALL) for n in ALGORITHMS] + [("ERM", RESNET)],
                         ids=list(ALGORITHMS) + ["ERM-resnet18"])
def test_autocast_does_not_leak_into_parameters_gradients_or_optimiser_state(name, setting):
    alg = _build(name, setting, "bf16")
    batches = _batches(setting)
    for _ in range(2):
        _update(alg, batches, "bf16")
    assert all(p.dtype == torch.float32 for p in alg.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in alg.parameters())
    states = [s for opt in alg.optimizers().values() for s in opt.state.values()]
    assert states, "the optimiser took no step"
    for state in states:
        for key in ("exp_avg", "exp_avg_sq"):
            assert state[key].dtype == torch.float32, key


def test_resnet_is_channels_last_only_in_bf16_and_computes_the_same_function():
    fp32, bf16 = _build("ERM", RESNET, "fp32"), _build("ERM", RESNET, "bf16")
    conv = lambda a: a.featurizer.network.conv1.weight
    assert conv(bf16).is_contiguous(memory_format=torch.channels_last)
    assert conv(fp32).is_contiguous() and not conv(fp32).is_contiguous(memory_format=torch.channels_last)
    x = _batches(RESNET)[0][0]
    with torch.no_grad():  # layout alone (no autocast): float32 rounding only
        assert torch.allclose(bf16.predict(x), fp32.predict(x), rtol=1e-4, atol=1e-5)
    bf16.load_state_dict(fp32.state_dict())  # checkpoints load across layouts
    assert conv(bf16).is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------ Grad-CAM
@pytest.mark.parametrize("setting", [SMALL, (*RESNET[:1], (3, 96, 96), *RESNET[2:])],
                         ids=["small_cnn", "resnet18_96px"])
def test_grad_cam_under_bf16_matches_float32(setting):
    """The min-max Grad-CAM (what every CAM loss and metric reads). cam = sum_k alpha_k A_k
    sums terms of both signs, so rounding each product by ~u errs by ~u * sum_k |alpha_k A_k|,
    and min-max divides by the map's range: the bound is 4u * kappa per sample, kappa =
    max_cells sum_k |alpha_k A_k| / range(cam) (the sum's condition number; 3 to 24 here)."""
    alg = _build("ERM", setting, "fp32").eval()
    x, y, _ = _batches(setting)[0]
    A, alpha, _ = grad_cam_parts(alg.network, alg.cam_layer, x, y)
    ref, _ = grad_cam(alg.network, alg.cam_layer, x, y, relu=True)
    ref, terms = ref.detach().flatten(1), (alpha * A).detach().abs().sum(dim=1).flatten(1)
    kappa = terms.amax(dim=1) / (ref.amax(dim=1) - ref.amin(dim=1))
    with precision.autocast("bf16", "cpu"):
        got, _ = grad_cam(alg.network, alg.cam_layer, x, y, relu=True)
    assert got.dtype == torch.float32
    err = (normalize_cam(got.detach().flatten(1)) - normalize_cam(ref)).abs().amax(dim=1)
    assert (err <= TOL * kappa).all(), (err / (U * kappa)).tolist()


# ------------------------------------------------------------------ explanation metrics
def _trained_small_cnn():
    """A small CNN with confident, input-dependent predictions (random weights give near-uniform
    probabilities, which would make every faithfulness metric ~0 whatever the precision)."""
    alg = _build("ERM", SMALL, "fp32")
    alg.optimizer.param_groups[0]["lr"] = 1e-2
    batches = _batches(SMALL, per_domain=16, seed=3)
    for _ in range(40):  # memorise one batch: about 1 s on one core
        alg.update([b[:2] for b in batches])
    return alg.eval(), batches


def test_explanation_metrics_under_bf16_match_float32():
    """Every recorded explanation metric, computed with the network under bf16 autocast, against
    float32 on the same weights. Probability-based metrics (comp, suff, del, ins and their
    random controls) and the energy / IoU shares are means of numbers in [0, 1]: 4u. The pointing
    game is a share of samples whose saliency maximum lands in the mask; bf16 may move a
    maximum between near-tied cells, so up to 2 of the 48 samples may flip."""
    alg, batches = _trained_small_cnn()
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    m = torch.cat([b[2] for b in batches])
    run = lambda: explanation_metrics(alg.network, alg.cam_layer, x, y, masks=m, fractions=metric_grid(0))
    ref = run()
    assert ref["comp"] > 2 * ref["comp_rand"], ref  # the saliency matters to the model
    with precision.autocast("bf16", "cpu"):
        got = run()
    assert got.keys() == ref.keys()
    for key, value in ref.items():
        bound = 2 / len(y) + 1e-9 if key in ("pg", "pg_cls") else TOL
        assert abs(got[key] - value) <= bound, (key, value, got[key])


def test_evaluation_ignores_the_precision_hparam():
    """The trainer evaluates outside autocast: a bf16 run's checkpoint metrics are float32 ones.
    Only the memory layout differs, so float32 rounding (~1e-7 relative), which may swap the
    order of near-tied pixels in the deletion curve of this random-weight net: 1e-3."""
    from domainbed_align.datasets.base import TensorDomain
    from domainbed_align.evaluation import evaluate_split
    fp32 = _build("ERM", RESNET, "fp32")
    bf16 = _build("ERM", RESNET, "bf16")
    bf16.load_state_dict(fp32.state_dict())
    x, y, m = _batches(RESNET)[0]
    domain = TensorDomain(x, y, m)
    a = evaluate_split(fp32, domain, list(range(4)), torch.arange(4).numpy(), 5, "cpu")
    b = evaluate_split(bf16, domain, list(range(4)), torch.arange(4).numpy(), 5, "cpu")
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], abs=1e-3, nan_ok=True), key


# ------------------------------------------------------------------ the switch
def test_precision_hparam_default_and_errors():
    assert hparams_registry.default_hparams("ERM", "VLCS")["precision"] == "fp32"
    assert hparams_registry.random_hparams("ALIGN", "VLCS", 5)["precision"] == "fp32"  # never drawn
    assert precision.of({}) == "fp32"  # upstream DomainBed's hparams have no such key
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; known: fp32, bf16"):
        precision.autocast("fp16", "cpu")
    with pytest.raises(ConfigError, match="unknown precision"):
        _build("ERM", RESNET, "half")


def test_backends_follow_the_precision():
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        precision.configure_backends("bf16", "cpu")
        assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, True)
        precision.configure_backends("fp32", "cpu")
        assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (True, False)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def test_bce_terms_run_with_autocast_off():
    """CUDA autocast raises on binary_cross_entropy (ALIGN's alignment, HAICS); the CPU's does
    not, so check the state the op sees instead."""
    seen = []
    original = F.binary_cross_entropy

    def spy(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(*args, **kwargs)

    F.binary_cross_entropy = spy
    try:
        for name in ("ALIGN", "HAICS"):
            _update(_build(name, SMALL, "bf16"), _batches(SMALL), "bf16")
    finally:
        F.binary_cross_entropy = original
    assert seen and not any(seen)
