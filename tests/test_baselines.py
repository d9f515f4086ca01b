"""Each baseline's explanation term against its formula on small hand-checkable tensors."""
import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from domainbed_align import hparams_registry
from domainbed_align.algorithms import ALGORITHMS, get_algorithm_class
from domainbed_align.algorithms.actdiff import shuffle_background
from domainbed_align.algorithms.care import care_term
from domainbed_align.algorithms.gradia import gradia_term
from domainbed_align.algorithms.guidance import guidable, input_gradient, weighted_mean
from domainbed_align.algorithms.haics import haics_term
from domainbed_align.algorithms.input_gradient import outside_penalty
from domainbed_align.algorithms.res import res_terms
from domainbed_align.algorithms.sgt import kl_to_masked, mask_low_saliency

BASELINES = ["SGT", "GRADIA", "RES", "CARE", "RRR", "GradMask", "HAICS", "ActDiff"]
MASK_BASED = [n for n in BASELINES if n != "SGT"]
# the key of each method's own explanation term in update()'s dict
TERM = {"SGT": "kl", "GRADIA": "attention", "RES": "l1", "CARE": "attention", "RRR": "rrr",
        "GradMask": "gradmask", "HAICS": "bce", "ActDiff": "actdiff"}


def _mask_4x4(cells):
    """(1, 1, 4, 4) mask whose 2x2 blocks at Grad-CAM cells `cells` are 1 (grid 2x2)."""
    m = torch.zeros(1, 1, 4, 4)
    for r, c in cells:
        m[0, 0, 2 * r:2 * r + 2, 2 * c:2 * c + 2] = 1
    return m


def test_registered_in_catalog_order():
    assert ALGORITHMS[:10] == ["ERM", "SGT", "DRE", "GRADIA", "RES", "CARE", "RRR", "GradMask", "HAICS",
                               "ActDiff"]
    for name in BASELINES:
        assert get_algorithm_class(name).NEEDS_MASKS == (name in MASK_BASED)


def test_guidable_and_weighted_mean():
    m = torch.zeros(3, 1, 2, 2)
    m[1] = 1           # full
    m[2, 0, 0, 0] = 1  # partial
    assert guidable(m).tolist() == [0.0, 0.0, 1.0]
    assert weighted_mean(torch.tensor([5.0, 7.0, 2.0]), guidable(m)).item() == 2.0
    assert weighted_mean(torch.tensor([5.0, 7.0]), torch.zeros(2)).item() == 0.0


# ------------------------------------------------------------------ SGT
def test_sgt_masks_the_lowest_saliency_features_with_in_range_noise():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])        # (1, 1, 2, 2)
    s = torch.tensor([[[[0.1, -3.0], [-0.2, 5.0]]]])      # |s| lowest: 0.1 (pos 0), 0.2 (pos 2)
    out = mask_low_saliency(x, s, 0.5, generator=torch.Generator().manual_seed(0))
    assert out[0, 0, 0, 1] == 2.0 and out[0, 0, 1, 1] == 4.0  # salient features untouched
    changed = out[0, 0, [0, 1], [0, 0]]
    assert (changed >= 1.0).all() and (changed <= 4.0).all() and not torch.equal(changed, x[0, 0, [0, 1], [0, 0]])
    assert torch.equal(mask_low_saliency(x, s, 0.0), x)


def test_sgt_kl_direction():
    logits, masked = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[0.0, 0.0]])
    p, q = torch.tensor([0.25, 0.75]), torch.tensor([0.5, 0.5])
    assert kl_to_masked(logits, masked).item() == pytest.approx((p * (p / q).log()).sum().item(), abs=1e-6)
    assert kl_to_masked(logits, logits).item() == pytest.approx(0.0, abs=1e-7)


# ------------------------------------------------------------------ Grad-CAM methods
def test_gradia_is_l1_to_the_pooled_mask():
    g = torch.tensor([[[1.0, 0.5], [0.0, 0.0]]])
    m = _mask_4x4([(0, 0)])
    assert gradia_term(g, m).item() == pytest.approx((0 + 0.5 + 0 + 0) / 4)
    assert gradia_term(m[:, 0, ::2, ::2], m).item() == 0.0  # saliency == mask: nothing to fix


def test_res_threshold_search_and_boundary_term():
    g = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    m = _mask_4x4([(0, 0)])
    hp = {"res_blur_sigma": 0.0, "res_tanh_scale": 5.0, "res_n_thresholds": 3,
          "res_target_rescale": False}
    l1, boundary, a = res_terms(g, m, hp)
    # candidates 0, 0.5, 1: a = 0.5 gives |tanh(2.5) - 1| on every cell; a = 0 gives (~0 + 3*1) / 4
    assert a.item() == 0.5
    assert boundary.item() == pytest.approx(1 - math.tanh(2.5), rel=1e-5)
    assert l1.item() == 0.0
    hp["res_blur_sigma"] = 1.0  # RES-G: the blurred target differs from the hard mask
    assert res_terms(g, m, hp)[0].item() > 0


def test_care_rewards_inside_up_to_tau_and_penalises_outside():
    g = torch.tensor([[[0.9, 0.9, 0.0, 0.2], [0.9, 0.9, 0.0, 0.2]]])  # (1, 2, 4)
    m = torch.tensor([[[[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]]])
    assert care_term(g, m, tau=1.0).item() == pytest.approx(-0.9 + 0.1)
    assert care_term(g, m, tau=0.5).item() == pytest.approx(-0.5 + 0.1)  # reward capped at tau


def test_haics_bce_with_and_without_negatives():
    g = torch.tensor([[[0.5, 0.25], [0.0, 1.0]]], dtype=torch.float64)  # float64: exact clamp at eps
    m = _mask_4x4([(0, 0)]).double()
    eps = 1e-6
    cells = [-math.log(0.5), -math.log(0.75), -math.log(1 - eps), -math.log(eps)]
    assert haics_term(g, m, "outside").item() == pytest.approx(sum(cells) / 4, rel=1e-4)
    assert haics_term(g, m, "none").item() == pytest.approx(-math.log(0.5), rel=1e-5)


# ------------------------------------------------------------------ input-gradient methods
class _Linear(nn.Module):
    def __init__(self, W):
        super().__init__()
        self.W = nn.Parameter(W)

    def forward(self, x):
        return x.flatten(1) @ self.W.t()


def test_rrr_and_gradmask_gradients_match_the_linear_case():
    """For logits z = W x: d sum_k log p_k / dx = sum_k W_k - K * p^T W; d z_y / dx = W_y."""
    torch.manual_seed(0)
    W, x, y = torch.randn(3, 4), torch.randn(2, 1, 2, 2), torch.tensor([2, 0])
    net = _Linear(W)
    g, logits = input_gradient(net, x, lambda z: F.log_softmax(z, 1).sum(1), create_graph=True)
    p = logits.softmax(1).detach()
    expected = W.sum(0) - 3 * p @ W
    assert torch.allclose(g.flatten(1), expected, atol=1e-6)
    g_true, _ = input_gradient(net, x, lambda z: z.gather(1, y.view(-1, 1))[:, 0], create_graph=True)
    assert torch.allclose(g_true.flatten(1), W[y])
    m = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]).expand(2, 1, 2, 2)
    outside = W[y][:, 1:]  # pixels 1..3 are outside the mask
    assert torch.allclose(outside_penalty(g_true, m, 1), outside.abs().sum(1) / 4)
    assert torch.allclose(outside_penalty(g_true, m, 2), outside.pow(2).sum(1) / 4)


# ------------------------------------------------------------------ ActDiff
def test_shuffle_background_permutes_only_the_background():
    x = torch.arange(2 * 3 * 16, dtype=torch.float32).view(2, 3, 4, 4)
    m = torch.zeros(2, 1, 4, 4)
    m[:, :, 1:3, 1:3] = 1
    out = shuffle_background(x, m, generator=torch.Generator().manual_seed(0))
    fg = m.expand_as(x).bool()
    assert torch.equal(out[fg], x[fg])
    for i in range(2):
        bg_in, bg_out = x[i, 0][~fg[i, 0]], out[i, 0][~fg[i, 0]]
        assert torch.equal(bg_in.sort().values, bg_out.sort().values) and not torch.equal(bg_in, bg_out)
        # channels move together: the same permutation for every channel
        assert torch.equal(out[i, 1] - out[i, 0], torch.full((4, 4), 16.0))


# ------------------------------------------------------------------ whole algorithms
def _alg(name, **overrides):
    torch.manual_seed(0)
    hp = hparams_registry.default_hparams(name, "SpuriousDigits")
    hp.update(overrides)
    return get_algorithm_class(name)((3, 28, 28), 10, 3, hp)


def _batch(mask_fn):
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(6, 3, 28, 28, generator=g), torch.randint(0, 10, (6,), generator=g)
    return x, y, mask_fn(torch.zeros(6, 1, 28, 28))


def _stroke(m):
    m[:, :, 8:20, 10:16] = 1
    return m


@pytest.mark.parametrize("name", MASK_BASED)
def test_empty_or_full_masks_give_zero_explanation_weight(name):
    alg = _alg(name)
    x, y, m = _batch(lambda m: m)
    m[3:] = 1  # half empty, half full
    terms = alg.losses(x, y, m)
    assert terms[TERM[name]].item() == 0.0
    assert terms["loss"].item() == pytest.approx(terms["ce"].item() * (1 - alg.hparams.get("care_alpha", 0)))
    x, y, m = _batch(_stroke)
    assert alg.losses(x, y, m)[TERM[name]].item() != 0.0  # a real mask: the term is live


@pytest.mark.parametrize("name", BASELINES)
def test_inner_gradients_never_reach_parameter_grad(name):
    """losses() takes its saliency with autograd.grad: no parameter's .grad is touched."""
    alg = _alg(name)
    x, y, m = _batch(_stroke)
    terms = alg.losses(x, y, m)
    assert all(p.grad is None for p in alg.parameters())
    terms["loss"].backward()
    assert all(p.grad is not None for p in alg.parameters())


@pytest.mark.parametrize("name", ["GRADIA", "HAICS"])
def test_cam_create_graph_switch_reaches_the_head(name):
    """Detached channel weights (default): the explanation term gives the head no gradient."""
    x, y, m = _batch(_stroke)
    for create_graph in (False, True):
        alg = _alg(name, cam_create_graph=create_graph)
        (g,) = torch.autograd.grad(alg.losses(x, y, m)[TERM[name]], alg.classifier.weight, allow_unused=True)
        assert (g is not None and g.abs().sum() > 0) == create_graph


def test_mask_based_algorithm_without_masks_is_a_clear_error():
    alg = _alg("GRADIA")
    x, y, _ = _batch(_stroke)
    with pytest.raises(ValueError, match="GRADIA needs .*masks"):
        alg.update([(x, y)])


@pytest.mark.slow
@pytest.mark.parametrize("name", BASELINES)
def test_constructs_and_steps_at_224_px(name):
    hp = hparams_registry.default_hparams(name, "VLCS")
    hp.update(pretrained=False, resnet18=True)
    torch.manual_seed(0)
    alg = get_algorithm_class(name)((3, 224, 224), 5, 3, hp)
    g = torch.Generator().manual_seed(0)
    mbs = [(torch.randn(2, 3, 224, 224, generator=g), torch.randint(0, 5, (2,), generator=g),
            _stroke(torch.zeros(2, 1, 224, 224)).roll(80, dims=3)) for _ in range(3)]
    vals = alg.update(mbs if alg.NEEDS_MASKS else [b[:2] for b in mbs])
    assert all(type(v) is float and math.isfinite(v) for v in vals.values())
    alg.eval()
    with torch.no_grad():
        assert alg.predict(mbs[0][0]).shape == (2, 5)


def test_trainer_hands_spurious_digits_masks_to_a_mask_based_algorithm(tmp_path, monkeypatch):
    """Through the real trainer: GRADIA's batches carry (x, y, m) with SpuriousDigits' masks."""
    from domainbed_align import train
    from domainbed_align.algorithms.gradia import GRADIA
    seen = []
    original = GRADIA.losses

    def spy(self, x, y, m):
        seen.append(m)
        return original(self, x, y, m)
    monkeypatch.setattr(GRADIA, "losses", spy)
    out = tmp_path / "run"
    assert train.main(["--dataset", "SpuriousDigits", "--algorithm", "GRADIA", "--test_envs", "3",
                       "--steps", "2", "--output_dir", str(out), "--skip_model_save",
                       "--hparams", '{"explain_n": 0, "batch_size": 4}']) == 0
    assert len(seen) == 2 and seen[0].shape == (12, 1, 28, 28)
    assert 0 < seen[0].mean() < 0.5 and set(seen[0].unique().tolist()) <= {0.0, 1.0}  # digit strokes
    record = [json.loads(line) for line in open(out / "results.jsonl")][-1]
    assert {"ce", "attention", "loss"} <= set(record)


def test_terms_vanish_when_the_saliency_already_matches_the_mask():
    """Where it is well defined: nothing left to correct gives a zero explanation loss."""
    m = _mask_4x4([(0, 0), (1, 1)])
    g = m[:, 0, ::2, ::2].clone()  # the CAM is the mask
    hp = {"res_blur_sigma": 0.0, "res_tanh_scale": 5.0, "res_n_thresholds": 32,
          "res_target_rescale": False}
    l1, boundary, _ = res_terms(g, m, hp)
    assert l1.item() == 0.0 and F.relu(boundary - 0.1).item() == 0.0  # below eta: RES is satisfied
    full_size = F.interpolate(g.unsqueeze(1), scale_factor=2, mode="nearest")[:, 0]
    assert care_term(full_size, m, tau=0.8).item() == pytest.approx(-0.8)  # CARE's minimum
    # input gradients: a linear model that reads only the mask's pixels has none outside it
    W = torch.randn(3, 16) * m.flatten()
    x = torch.randn(2, 1, 4, 4)
    for score in (lambda z: F.log_softmax(z, 1).sum(1), lambda z: z[:, 0]):
        grad, _ = input_gradient(_Linear(W), x, score, create_graph=True)
        assert outside_penalty(grad, m.expand(2, 1, 4, 4), 1).abs().max().item() == 0.0
    # ActDiff: a flat background looks the same shuffled
    x = torch.zeros(2, 3, 4, 4)
    x[:, :, :2, :2] = torch.randn(2, 3, 2, 2)
    assert torch.equal(shuffle_background(x, m.expand(2, 1, 4, 4)), x)


class _Recording(dict):
    def __init__(self, *a):
        super().__init__(*a)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


@pytest.mark.parametrize("name", BASELINES)
def test_every_declared_hparam_of_a_baseline_is_read(name):
    """No dead hparams: each key of the algorithm's own block changes something."""
    shared = set(hparams_registry.default_hparams("ERM", "SpuriousDigits"))
    hp = _Recording(hparams_registry.default_hparams(name, "SpuriousDigits"))
    torch.manual_seed(0)
    alg = get_algorithm_class(name)((3, 28, 28), 10, 3, hp)
    x, y, m = _batch(_stroke)
    alg.update([(x, y, m)] if alg.NEEDS_MASKS else [(x, y)])
    assert set(hp) - shared - hp.read == set()
