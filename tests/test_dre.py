"""DRE's L_reg: our batched terms against a per-class loop written from the description of its
public code (github.com/tangli-udel/DRE, dre/mixuploss.py; method.md section 1)."""
import pytest
import torch
import torch.nn.functional as F

from domainbed_align import hparams_registry
from domainbed_align.algorithms import get_algorithm_class
from domainbed_align.algorithms.dre import column_max_norm, dre_regulariser, same_class_partners

captum_attr = pytest.importorskip("captum.attr")

N_CLASSES = 5  # the dataset's; class 4 is absent from the batch and still divides


def _minmax(a):
    """Per-sample min-max of (n, 1, h, w) maps, no eps (the public code's `norm`)."""
    flat = a.flatten(1)
    lo, hi = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
    return (a - lo) / (hi - lo)


def reference_terms(net, layer, x, y, partner, lam, num_classes):
    """For each class present: captum's LayerGradCam (no ReLU, weights without a graph) of the
    class's images and of their mixes with permuted partners (lambda per sample); L1 between
    the mix's map and the mix of maps, sparsity = mean of the clean and mixed maps'
    torch.linalg.norm(map, dim=(1, 2), ord=1), CE of the mixes; each summed, / num_classes."""
    gc = captum_attr.LayerGradCam(net, layer)
    cons = spars = ce = 0.0
    for c in range(num_classes):
        idx = torch.nonzero(y == c).squeeze(1)
        if len(idx) == 0:
            continue
        position = {int(i): k for k, i in enumerate(idx)}
        perm = torch.tensor([position[int(partner[i])] for i in idx])  # partner inside the class
        inp, lam_c = x[idx], lam[idx].view(-1, 1, 1, 1)
        attr = _minmax(gc.attribute(inp, target=c))               # (n, 1, h, w)
        mix = lam_c * inp + (1 - lam_c) * inp[perm]
        attr_mix = _minmax(gc.attribute(mix, target=c))
        cons = cons + F.l1_loss(attr_mix, lam_c * attr + (1 - lam_c) * attr[perm])
        spars = spars + (torch.linalg.norm(attr, dim=(1, 2), ord=1).mean()
                         + torch.linalg.norm(attr_mix, dim=(1, 2), ord=1).mean()) / 2
        ce = ce + F.cross_entropy(net(mix), y[idx])
    return {"consistency": cons / num_classes, "sparsity": spars / num_classes, "ce_mix": ce / num_classes}


def _setup(seed=0):
    hp = hparams_registry.default_hparams("DRE", "SpuriousDigits")
    torch.manual_seed(seed)
    alg = get_algorithm_class("DRE")((3, 28, 28), N_CLASSES, 3, hp)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(14, 3, 28, 28, generator=g)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 0, 1, 2, 3])  # class 2 twice, 4 absent
    partner = same_class_partners(y, generator=g)
    lam = torch.distributions.Beta(0.2, 0.2).sample((14,))
    return alg, hp, x, y, partner, lam


@pytest.mark.parametrize("seed,create_graph", [(0, False), (1, True)])
def test_batched_terms_and_gradients_equal_the_per_class_loop(seed, create_graph):
    """create_graph (ALIGN's alignment keeps alpha's graph) must not leak into DRE's terms."""
    alg, hp, x, y, partner, lam = _setup(seed)
    ours = dre_regulariser(alg.network, alg.cam_layer, x, y, N_CLASSES, hp, create_graph=create_graph,
                           partner=partner, lam=lam)
    ref = reference_terms(alg.network, alg.cam_layer, x, y, partner, lam, N_CLASSES)
    params = list(alg.network.parameters())
    for k in ("consistency", "sparsity", "ce_mix"):
        assert float(ours.terms[k].detach()) == pytest.approx(float(ref[k].detach()), abs=1e-5), k
        g_ours = torch.autograd.grad(ours.terms[k], params, retain_graph=True, allow_unused=True)
        g_ref = torch.autograd.grad(ref[k], params, retain_graph=True, allow_unused=True)
        for a, b in zip(g_ours, g_ref):
            a = torch.zeros_like(b) if a is None and b is not None else a
            b = torch.zeros_like(a) if b is None and a is not None else b
            if a is not None:
                assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), k
    expected = 1.0 * ref["consistency"] + 0.5 * ref["sparsity"] + 0.1 * ref["ce_mix"]
    assert float(ours.reg.detach()) == pytest.approx(float(expected.detach()), abs=1e-5)


def test_column_max_norm_is_linalg_matrix_one_norm():
    g = torch.tensor([[[0.1, 0.9, 0.0], [0.5, 0.2, 0.3]]])  # (1, 2, 3): column maxima 0.5 0.9 0.3
    assert float(column_max_norm(g)) == pytest.approx((0.5 + 0.9 + 0.3) / 3)
    g = torch.rand(4, 7, 7)
    assert torch.allclose(column_max_norm(g), torch.linalg.norm(g[:, None], dim=(1, 2), ord=1).mean(1))


def test_partners_are_a_uniform_permutation_inside_each_class():
    y = torch.tensor([2, 0, 2, 2, 1, 0, 2])
    seen = set()
    for s in range(300):
        p = same_class_partners(y, generator=torch.Generator().manual_seed(s))
        assert sorted(p.tolist()) == list(range(len(y))) and torch.equal(y[p], y)
        seen.add(tuple(p.tolist()))
    # class 2 has 4! = 24 orders, class 0 has 2, class 1 one: 48 permutations, all reachable
    assert len(seen) == 48


def test_dre_update_is_ce_plus_weighted_reg(monkeypatch):
    """DRE.update descends CE + dre_weight * (1.0 L1 + 0.5 sparsity + 0.1 mixed CE)."""
    alg, hp, x, y, partner, lam = _setup()
    alg.hparams["dre_weight"] = 0.7
    seen = {}
    import domainbed_align.algorithms.dre as dre_module
    monkeypatch.setattr(dre_module, "step", lambda opt, loss: seen.setdefault("loss", loss))
    torch.manual_seed(4)
    alg.update([(x, y)])
    torch.manual_seed(4)
    out = dre_regulariser(alg.network, alg.cam_layer, x, y, N_CLASSES, hp)
    terms = out.terms
    expected = (F.cross_entropy(alg.network(x), y)
                + 0.7 * (terms["consistency"] + 0.5 * terms["sparsity"] + 0.1 * terms["ce_mix"]))
    assert float(seen["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    # lambda is drawn per sample: the mixes of two same-class pairs use different weights
    torch.manual_seed(4)
    from domainbed_align.algorithms.dre import mixup_draw
    _, lam = mixup_draw(y, 0.2)
    assert lam.shape == (len(y),) and len(set(lam.tolist())) == len(y)
