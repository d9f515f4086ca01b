"""Which split each record key is measured on, and what `evaluate_split` computes on it."""
import hashlib
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from domainbed_align import evaluation, train
from domainbed_align.datasets.base import TensorDomain
from domainbed_align.evaluation import evaluate_split, explain_subsample
from domainbed_align.explain import metrics
from domainbed_align.lib.errors import TrainingError


def _domainbed_split(n, fraction, trial_seed, env):
    seed = int(hashlib.md5(str((trial_seed, env)).encode()).hexdigest(), 16) % 2**31
    keys = list(range(n))
    np.random.RandomState(seed).shuffle(keys)
    k = int(n * fraction)
    return keys[k:], keys[:k]


@pytest.fixture
def trainer(tmp_path):
    t = train.Trainer(train.TrainConfig(dataset="Debug28", algorithm="ERM", test_envs=(1,),
                                        trial_seed=2, output_dir=str(tmp_path),
                                        hparams='{"explain_n": 5}'))
    t._setup()
    return t


def test_every_key_comes_from_its_own_split(trainer, monkeypatch):
    calls = []

    def recorder(algorithm, dataset, indices, explain_positions, num_classes, device,
                 num_workers=0, cue_region="unset"):
        assert algorithm is trainer.algorithm and device == trainer.device
        assert cue_region is None                            # Debug28 has no cue
        assert num_workers == 0                              # Debug28: in memory, no workers
        calls.append((dataset, list(indices), explain_positions, num_classes))
        return {"acc": float(len(calls)), "comp": -float(len(calls))}
    monkeypatch.setattr(train, "evaluate_split", recorder)
    results = trainer._evaluate()
    assert len(calls) == 6 and len(results) == 12
    for i in range(3):
        want = dict(zip(("in", "out"), _domainbed_split(48, 0.2, 2, i)))
        assert len(want["in"]) == 39 and len(want["out"]) == 9
        for name in ("in", "out"):
            call = int(results[f"env{i}_{name}_acc"])
            assert results[f"env{i}_{name}_comp"] == -call
            dataset, indices, positions, num_classes = calls[call - 1]
            assert indices == want[name], (i, name)
            assert dataset.x is trainer.dataset.datasets[i].x      # domain i, evaluation view
            assert num_classes == 2
            np.testing.assert_array_equal(positions, explain_subsample(len(want[name]), 5, 2, i,
                                                                       name))


def test_explain_subsample_is_fixed_sorted_and_split_specific():
    a = explain_subsample(20, 5, 0, 1, "in")
    assert list(a) == sorted(a) and len(set(a)) == 5 and a.max() < 20
    seed = int(hashlib.md5(str((0, 1, "in", "explain")).encode()).hexdigest(), 16) % 2**31
    np.testing.assert_array_equal(a, np.sort(np.random.RandomState(seed).permutation(20)[:5]))
    assert list(explain_subsample(20, 5, 0, 1, "out")) != list(a)
    assert list(explain_subsample(3, 5, 0, 1, "in")) == [0, 1, 2]       # all when fewer


class IndexModel(nn.Module):
    """Reads the item index stored in pixel (0, 0, 0); right on even indices, wrong on odd."""

    def __init__(self):
        super().__init__()
        self.network = nn.Identity()
        self.cam_layer = None
        self.hparams = {"explain_grid_points": 0, "pg_tolerance_px224": 15.0}
        self.seen_training = []
        self.extras = []

    def predict(self, x):
        self.seen_training.append(self.training)
        idx = x[:, 0, 0, 0].long()
        label = x[:, 1, 0, 0].long()
        pred = torch.where(idx % 2 == 0, label, 1 - label)
        return 5.0 * nn.functional.one_hot(pred, 2).float()

    def explanation_extras(self, x, y, m):
        self.extras.append((x[:, 0, 0, 0].long().tolist(), y.tolist(), m.shape))
        return {"mask_iou": 0.25}


def _domain(n=10):
    x = torch.zeros(n, 2, 3, 3)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32)
    y = torch.tensor([i % 2 for i in range(n)])
    x[:, 1, 0, 0] = y.float()
    m = torch.zeros(n, 1, 3, 3)
    m[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32)
    return TensorDomain(x, y, m)


def test_evaluate_split_measures_only_the_given_indices(monkeypatch):
    seen = []

    def fake_metrics(network, layer, x, y, masks=None, **options):
        seen.append((x[:, 0, 0, 0].long().tolist(), y.tolist(), masks[:, 0, 0, 0].long().tolist()))
        return {"comp": 0.5}
    monkeypatch.setattr(metrics, "explanation_metrics", fake_metrics)
    dens = []
    monkeypatch.setattr(evaluation, "_densities", lambda a, x, m, cue: dens.append(
        (x[:, 0, 0, 0].long().tolist(), cue)) or {"cam_density_cue": 7.0})
    model = IndexModel()
    model.train()
    indices = [0, 1, 2, 3, 4, 6]
    out = evaluate_split(model, _domain(), indices, np.array([1, 3, 5]), 2, "cpu")
    assert out["acc"] == pytest.approx(4 / 6)                    # even indices right
    y = np.array([i % 2 for i in indices])
    probs = torch.softmax(model.predict(_domain().x[indices]), 1).numpy()
    assert out["auc"] == pytest.approx(metrics.prediction_auc(probs, y, 2))
    assert seen == [([1, 3, 6], [1, 1, 0], [1, 3, 6])]          # positions into the split
    assert model.extras == [([1, 3, 6], [1, 1, 0], (3, 1, 3, 3))]
    assert out["comp"] == 0.5 and out["mask_iou"] == 0.25
    assert dens == [([1, 3, 6], None)] and out["cam_density_cue"] == 7.0
    assert model.seen_training[0] is False and model.training    # eval inside, mode restored


def test_evaluate_split_without_explanations_and_in_batches(monkeypatch):
    monkeypatch.setattr(evaluation, "EVAL_BATCH_SIZE", 3)
    monkeypatch.setattr(metrics, "explanation_metrics", lambda *a, **k: pytest.fail("called"))
    model = IndexModel()
    model.eval()
    out = evaluate_split(model, _domain(), [9, 8, 7, 5, 1], None, 2, "cpu")
    assert out["acc"] == pytest.approx(1 / 5) and set(out) == {"acc", "auc"}
    assert len(model.seen_training) == 2 and not model.training
    out = evaluate_split(model, _domain(), [2, 4], np.array([], dtype=np.int64), 2, "cpu")
    assert out["acc"] == 1.0 and set(out) == {"acc", "auc"}


def test_diverged_model_is_a_training_error():
    model = IndexModel()
    model.predict = lambda x: torch.full((len(x), 2), float("nan"))
    with pytest.raises(TrainingError, match="outputs NaN/inf"):
        evaluate_split(model, _domain(), [0, 1], None, 2, "cpu")
    assert model.training


def test_evaluation_workers_are_capped_by_the_cpus(trainer, monkeypatch):
    workers = []
    monkeypatch.setattr(train, "evaluate_split", lambda *a, num_workers=0, cue_region=None: workers.append(
        num_workers) or {"acc": 0.0})
    monkeypatch.setattr(trainer.dataset, "N_WORKERS", 4)
    for cpus, expected in ((3, 3), (8, 4), (None, 1)):
        monkeypatch.setattr(train.os, "cpu_count", lambda: cpus)
        workers.clear()
        trainer._evaluate()
        assert workers == [expected] * 6


def test_region_densities_follow_their_definition():
    s = torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])            # mass 4
    strokes = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    cue = torch.tensor([[False, True], [False, False]])
    d = metrics.region_densities(s, strokes, cue)
    # strokes: mass 1/4 over area 1/4; cue: 0 over 1/4; background: 3/4 over 2/4
    assert d == {"strokes": 1.0, "cue": 0.0, "background": 1.5}
    d = metrics.region_densities(s, strokes)                 # no cue: all else is background
    assert d["strokes"] == 1.0 and np.isnan(d["cue"]) and d["background"] == pytest.approx(1.0)
    pooled = metrics.region_densities(torch.stack([s[0], 3 * s[0]])[:, None],
                                      torch.stack([strokes[0], 1 - strokes[0]])[:, None], cue)
    # batch pooled: image 2 is [[3, 0], [0, 9]] with strokes everywhere but the top left:
    # strokes hold mass 1 + 9 of 16 on 1 + 3 of 8 pixels; the cue pixel is a stroke in image 2
    assert pooled["strokes"] == pytest.approx((10 / 16) / (4 / 8))
    assert pooled["cue"] == 0.0                                # one cue pixel, no mass
    assert all(np.isnan(v) for v in metrics.region_densities(0 * s, strokes, cue).values())
    # a mask value of exactly 0.5 is a stroke; a total mass below 1 is still a mass
    d = metrics.region_densities(torch.tensor([[[0.5, 0.0], [0.0, 0.0]]]),
                                 torch.tensor([[[0.5, 0.0], [0.0, 0.0]]]), cue)
    assert d == {"strokes": 4.0, "cue": 0.0, "background": 0.0}
    # a cue pixel under a stroke counts as stroke, not cue: here the cue region is empty
    d = metrics.region_densities(torch.tensor([[[0.0, 2.0], [0.0, 2.0]]]),
                                 torch.tensor([[[0.0, 1.0], [0.0, 0.0]]]), cue)
    assert d["strokes"] == 2.0 and np.isnan(d["cue"]) and d["background"] == pytest.approx(2 / 3)


def test_run_records_densities_and_writes_a_snapshot(tmp_path):
    hp = {"explain_n": 8, "align_warmup_steps": 1, "align_masker_warmup_steps": 1,
          "align_l3_ramp_steps": 1}
    out = train.run(train.TrainConfig(dataset="SpuriousDigits", algorithm="ALIGN", test_envs=(3,),
                                      steps=2, checkpoint_freq=1, output_dir=str(tmp_path),
                                      hparams=json.dumps(hp), skip_model_save=True),
                    handle_signals=False)
    rec = [json.loads(line) for line in open(os.path.join(out, "results.jsonl"))][-1]
    for what in ("cam", "mask"):
        for region in ("strokes", "cue", "background"):
            assert np.isfinite(rec[f"env3_in_{what}_density_{region}"])
    z = np.load(os.path.join(out, "explanations.npz"))
    assert int(z["test_env"]) == 3 and z["x"].dtype == np.uint8 and z["x"].shape == (8, 3, 28, 28)
    assert z["cam"].shape == (8, 7, 7) and (z["cam"] >= 0).all()
    assert z["mask"].shape == (8, 1, 28, 28) and set(np.unique(z["gt"])) <= {0, 1}
    assert (z["x"].reshape(8, -1).min(1) == 0).all() and (z["x"].reshape(8, -1).max(1) == 255).all()
    ds = train.Trainer(train.TrainConfig(dataset="SpuriousDigits", algorithm="ALIGN", test_envs=(3,),
                                         output_dir=str(tmp_path / "x"), hparams=json.dumps(hp)))
    ds._setup()
    first = np.asarray(ds.splits[3]["in"])[ds.explain[3, "in"]][:8]
    np.testing.assert_array_equal(z["y"], ds.dataset.datasets[3].y[first].numpy())
    np.testing.assert_array_equal(z["gt"], ds.dataset.datasets[3].eval_masks[first].numpy() >= 0.5)
