"""Upstream DomainBed's helpers (lib.misc, lib.query), class_balanced, and an algorithm ported
from upstream by changing its import lines only."""
import json

import numpy as np
import pytest
import torch

from domainbed_align.lib import misc
from domainbed_align.lib.query import Q, hashable, make_selector_fn


def test_query_helpers_match_upstream():
    records = [{"a": {"b": 1}, "c": 2.0}, {"a": {"b": 2}, "c": float("nan")}, {"a": {"b": 1}, "c": 4.0}]
    assert make_selector_fn("a.b")(records[0]) == 1
    assert make_selector_fn("a.b,c")(records[2]) == (1, 4.0)
    groups = Q(records).group_map("a.b", lambda k, g: (k, g.select("c").filter_not_nan().mean_std())).list()
    assert groups[0] == (1, (3.0, 1.0)) and groups[1][0] == 2 and np.isnan(groups[1][1][0])
    assert Q([[1, 2], [3]]).flatten().list() == [1, 2, 3]
    assert (Q([3, 1, 2]).min(), Q([3, 1, 2]).max(), Q([3, 1, 2]).sum(), Q([3, 1, 2]).len()) == (1, 3, 6, 3)
    assert hashable([1, {"x": 2}]) == json.dumps({"_": [1, {"x": 2}]}, sort_keys=True) and hashable(3) == 3


def test_param_dict_arithmetic():
    p = misc.ParamDict({"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(3.0)})
    q = misc.ParamDict({"w": torch.tensor([1.0, 1.0]), "b": torch.tensor(1.0)})
    r = (p - q) * 2 + 1
    assert torch.equal(r["w"], torch.tensor([1.0, 3.0])) and r["b"].item() == 5.0
    assert (3 * p / 3)["b"].item() == 3.0 and (-p)["b"].item() == -3.0
    assert misc.l2_between_dicts(p, q).item() == pytest.approx((0 + 1 + 4) / 3)


def test_balanced_weights_pairs_and_split():
    items = [(None, 0)] * 3 + [(None, 1)]
    assert misc.make_weights_for_balanced_classes(items).tolist() == pytest.approx([1 / 6] * 3 + [1 / 2])
    torch.manual_seed(0)
    mbs = [(torch.full((n, 1), float(d)), torch.full((n,), d)) for d, n in enumerate((4, 2, 3))]
    pairs = misc.random_pairs_of_minibatches(mbs)
    assert len(pairs) == 3
    firsts = sorted(int(xi[0, 0]) for (xi, _), _ in pairs)
    assert firsts == [0, 1, 2]  # every domain leads one pair
    for (xi, yi), (xj, yj) in pairs:
        assert len(xi) == len(xj) == min(len(mbs[int(xi[0, 0])][0]), len(mbs[int(xj[0, 0])][0]))
        assert int(xi[0, 0]) != int(xj[0, 0])
    from domainbed_align.train import split_indices
    out, in_ = misc.split_dataset(list(range(10)), 2, misc.seed_hash(0, 1))
    ours_in, ours_out = split_indices(10, 0.2, 0, 1)
    assert [out[i] for i in range(len(out))] == ours_out and [in_[i] for i in range(len(in_))] == ours_in


def test_class_balanced_sampling():
    from domainbed_align.datasets.base import TensorDomain
    from domainbed_align.datasets.loaders import train_batches
    y = torch.tensor([0] * 90 + [1] * 10)
    domain = TensorDomain(torch.zeros(100, 1, 2, 2), y)
    split = list(range(100))
    for balanced, lo, hi in ((False, 0.05, 0.15), (True, 0.45, 0.55)):
        stream = train_batches([domain], [split], 64, 0, 0, 0, class_balanced=balanced)
        share = torch.cat([next(stream)[0][1] for _ in range(40)]).float().mean().item()
        assert lo < share < hi, (balanced, share)


def test_trainer_honours_class_balanced(tmp_path, monkeypatch):
    from domainbed_align import train
    from domainbed_align.datasets import loaders
    seen = {}
    original = loaders.train_batches

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)
    monkeypatch.setattr(train, "train_batches", spy)
    assert train.main(["--dataset", "Debug28", "--steps", "2", "--output_dir", str(tmp_path / "r"),
                       "--skip_model_save", "--hparams", '{"explain_n": 0, "class_balanced": true}']) == 0
    assert seen["class_balanced"] is True


# An algorithm as upstream writes it (upstream's Mixup, Yan et al. 2020), with upstream's import
# lines `from domainbed import networks` / `from domainbed.lib.misc import ...` rewritten to ours.
UPSTREAM_STYLE = '''
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from domainbed_align import networks
from domainbed_align.algorithms import Algorithm
from domainbed_align.lib.misc import random_pairs_of_minibatches


class PortedERM(Algorithm):
    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super(PortedERM, self).__init__(input_shape, num_classes, num_domains, hparams)
        self.featurizer = networks.Featurizer(input_shape, self.hparams)
        self.classifier = networks.Classifier(self.featurizer.n_outputs, num_classes,
                                              self.hparams["nonlinear_classifier"])
        self.network = nn.Sequential(self.featurizer, self.classifier)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.hparams["lr"],
                                          weight_decay=self.hparams["weight_decay"])

    def predict(self, x):
        return self.network(x)


class PortedMixup(PortedERM):
    def update(self, minibatches, unlabeled=None):
        objective = 0
        for (xi, yi), (xj, yj) in random_pairs_of_minibatches(minibatches):
            lam = np.random.beta(self.hparams["mixup_alpha"], self.hparams["mixup_alpha"])
            x = lam * xi + (1 - lam) * xj
            predictions = self.predict(x)
            objective += lam * F.cross_entropy(predictions, yi)
            objective += (1 - lam) * F.cross_entropy(predictions, yj)
        objective /= len(minibatches)
        self.optimizer.zero_grad()
        objective.backward()
        self.optimizer.step()
        return {"loss": objective.item()}
'''


def test_an_upstream_style_algorithm_registers_and_trains(tmp_path):
    from domainbed_align.algorithms import registry
    from domainbed_align import hparams_registry, train
    namespace = {}
    exec(compile(UPSTREAM_STYLE, "ported.py", "exec"), namespace)
    cls = namespace["PortedMixup"]
    registry.register_algorithm(cls)
    hparams_registry.algorithm_hparams("PortedMixup")(
        lambda hparam, dataset: hparam("mixup_alpha", 0.2, lambda r: 10 ** r.uniform(-1, 1)))
    try:
        assert "PortedMixup" in registry.ALGORITHMS
        out = tmp_path / "run"
        assert train.main(["--dataset", "SpuriousDigits", "--algorithm", "PortedMixup", "--test_envs", "3",
                           "--steps", "3", "--output_dir", str(out), "--skip_model_save",
                           "--hparams", '{"explain_n": 0, "batch_size": 8}']) == 0
        record = [json.loads(line) for line in open(out / "results.jsonl")][-1]
        assert record["step"] == 2 and record["hparams"]["mixup_alpha"] == 0.2 and np.isfinite(record["loss"])
    finally:
        registry.ALGORITHMS.remove("PortedMixup")
        registry._REGISTRY.pop("PortedMixup")
        hparams_registry._ALGORITHM_BLOCKS.pop("PortedMixup")


def _domains(sizes):
    """Minibatch d: x filled with d (so a pair names its domains), y = arange."""
    return [(torch.full((n, 2), float(d)), torch.arange(n)) for d, n in enumerate(sizes)]


def test_random_pairs_of_minibatches_is_a_cycle_over_a_permutation():
    mbs = _domains([4, 3, 5])
    torch.manual_seed(0)
    perm = torch.randperm(3).tolist()
    torch.manual_seed(0)
    pairs = misc.random_pairs_of_minibatches(mbs)
    assert len(pairs) == 3
    for i, ((xi, yi), (xj, yj)) in enumerate(pairs):
        a, b = perm[i], perm[(i + 1) % 3]
        n = min(len(mbs[a][0]), len(mbs[b][0]))
        assert (xi == a).all() and (xj == b).all() and len(xi) == len(yi) == len(xj) == len(yj) == n


def test_split_meta_train_test_pairs_train_domains_with_test_domains():
    mbs = _domains([4, 3, 5])
    np.random.seed(0)
    perm = np.random.permutation(3)
    choice = np.random.choice(perm[-1:], 2)
    np.random.seed(0)
    pairs = misc.split_meta_train_test(mbs)  # num_meta_test = 1
    assert len(pairs) == 2
    for i, ((xi, yi), (xj, yj)) in zip(perm[:2], pairs):
        j = choice[0]
        n = min(len(mbs[i][0]), len(mbs[j][0]))
        assert (xi == i).all() and (xj == j).all() and len(xi) == len(yi) == len(xj) == len(yj) == n
        assert torch.equal(yi, torch.arange(n))
    np.random.seed(0)
    assert len(misc.split_meta_train_test(mbs, num_meta_test=2)) == 1


def test_split_dataset_is_upstreams_shuffle_with_seed_0():
    data = list(range(10, 17))
    keys = list(range(7))
    np.random.RandomState(0).shuffle(keys)
    a, b = misc.split_dataset(data, 3)
    assert [a[i] for i in range(len(a))] == [10 + k for k in keys[:3]]
    assert [b[i] for i in range(len(b))] == [10 + k for k in keys[3:]]
    whole, rest = misc.split_dataset(data, 7)  # n == len is allowed
    assert len(whole) == 7 and len(rest) == 0


def test_param_dict_reflected_subtraction():
    p = misc.ParamDict({"w": torch.tensor([1.0, 2.0])})
    assert torch.equal((1 - p)["w"], torch.tensor([0.0, -1.0]))
