"""Contract tests over the registry (timm/DomainBed style): every algorithm, on CPU."""
import pytest
import torch

from domainbed_align import hparams_registry
from domainbed_align.algorithms import (ALGORITHMS, Algorithm, get_algorithm_class,
                                        register_algorithm)
from domainbed_align.catalog import ALGORITHM_ORDER
from domainbed_align.lib.errors import ConfigError

INPUT_SHAPE, N_CLASSES, N_DOMAINS, BATCH = (3, 28, 28), 4, 2, 8


def _minibatches(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(BATCH, *INPUT_SHAPE, generator=g),
             torch.randint(0, N_CLASSES, (BATCH,), generator=g),
             (torch.rand(BATCH, 1, 28, 28, generator=g) > 0.6).float()) for _ in range(N_DOMAINS)]


def _build(name, **overrides):
    hp = hparams_registry.default_hparams(name, "SpuriousDigits")
    hp.update(overrides)
    return get_algorithm_class(name)(INPUT_SHAPE, N_CLASSES, N_DOMAINS, hp)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_contract(name):
    torch.manual_seed(0)
    alg = _build(name)
    assert isinstance(alg, Algorithm)
    mbs = _minibatches()
    if not alg.NEEDS_MASKS:
        mbs = [b[:2] for b in mbs]
    for _ in range(3):
        vals = alg.update(mbs)
        assert vals and all(type(v) is float for v in vals.values()), vals
        assert all(torch.isfinite(torch.tensor(v)) for v in vals.values())
        assert "loss" in vals and (name == "ERM" or "ce" in vals), vals  # each term on its own
        assert len(vals) >= 3 or name in ("ERM", "ALIGN"), f"{name} reports no term of its own: {vals}"
    alg.eval()
    with torch.no_grad():
        logits = alg.predict(mbs[0][0])
    assert logits.shape == (BATCH, N_CLASSES)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_trainable_parameter_gets_a_gradient(name):
    """One update must reach every trainable parameter (nothing dead, nothing detached)."""
    torch.manual_seed(0)
    hp = hparams_registry.default_hparams(name, "SpuriousDigits")
    alg = _build(name, **{k: 1 for k in hp if k.endswith("_warmup_steps")})  # past warm-up fast
    before = {k: p.detach().clone() for k, p in alg.named_parameters() if p.requires_grad}
    mbs = _minibatches()
    if not alg.NEEDS_MASKS:
        mbs = [b[:2] for b in mbs]
    for _ in range(3):
        alg.update(mbs)
    unchanged = [k for k, p in alg.named_parameters() if k in before and torch.equal(before[k], p)]
    assert not unchanged, f"{name}: parameters never updated: {unchanged}"


def test_registry_order_and_errors():
    assert ALGORITHMS[0] == "ERM"
    known = [a for a in ALGORITHM_ORDER if a in ALGORITHMS]
    assert ALGORITHMS[:len(known)] == known
    with pytest.raises(ConfigError, match=r"unknown algorithm 'ALGN'; known: ERM"):
        get_algorithm_class("ALGN")
    with pytest.raises(ValueError, match="registered twice"):
        register_algorithm(type("ERM", (Algorithm,), {}))


def test_plugin_registers_after_builtins():
    from domainbed_align.algorithms import registry
    cls = type("MyPlugin", (Algorithm,), {})
    try:
        register_algorithm(cls)
        assert registry.ALGORITHMS[-1] == "MyPlugin"
        assert get_algorithm_class("MyPlugin") is cls
    finally:
        registry.ALGORITHMS.remove("MyPlugin")
        registry._REGISTRY.pop("MyPlugin")


def test_resnet_freezes_batchnorm_and_names_cam_layer():
    hp = hparams_registry.default_hparams("ERM", "VLCS")
    hp.update(pretrained=False, resnet18=True)
    alg = get_algorithm_class("ERM")((3, 64, 64), 5, 3, hp)
    alg.train()
    bns = [m for m in alg.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert alg.cam_layer is alg.featurizer.network.layer4
    before = bns[0].running_mean.clone()
    alg.update([(torch.randn(4, 3, 64, 64), torch.randint(0, 5, (4,)))])
    assert torch.equal(before, bns[0].running_mean)


def test_missing_imagenet_weights_is_one_clear_line(tmp_path, monkeypatch):
    from domainbed_align import networks
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*a, **k):
        raise OSError("network unreachable")
    import torchvision
    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(ConfigError, match=r"resnet18-f37072fd.pth.*pretrained\": false"):
        networks._load_imagenet_weights("resnet18")
