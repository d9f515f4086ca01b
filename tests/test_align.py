"""ALIGN: freezing is real, warm-up is respected, alignment reaches the featurizer, resume."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, run_module
from domainbed_align import hparams_registry
from domainbed_align.algorithms import get_algorithm_class
from domainbed_align.algorithms import align as align_module
from domainbed_align.algorithms.align import frozen, total_variation
from domainbed_align.algorithms.dre import dre_regulariser
from domainbed_align.explain.gradcam import grad_cam


def _align(**overrides):
    hp = hparams_registry.default_hparams("ALIGN", "SpuriousDigits")
    hp.update(overrides)
    torch.manual_seed(0)
    return get_algorithm_class("ALIGN")((3, 28, 28), 10, 3, hp)


def _batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(3)]


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(module, snapshot):
    return all(torch.equal(v, snapshot[k]) for k, v in module.state_dict().items())


def test_each_step_leaves_the_other_module_bit_identical():
    alg = _align(align_warmup_steps=0)
    x, y = torch.cat([b[0] for b in _batches()]), torch.cat([b[1] for b in _batches()])
    alg.train()
    net, masker = _snapshot(alg.network), _snapshot(alg.masker)
    alg.masker_step(x, y)
    assert _same(alg.network, net), "classifier changed during the masker step"
    assert not _same(alg.masker, masker)
    assert all(p.grad is None for p in alg.network.parameters())
    assert alg.network.training, "the classifier's train mode must come back"
    masker = _snapshot(alg.masker)
    alg.masker.zero_grad(set_to_none=True)
    with frozen(alg.masker):
        out = alg.classifier_step(x, y, align_weight=0.1)
    assert "align" in out
    assert _same(alg.masker, masker), "masker changed during the classifier step"
    assert not _same(alg.network, net)
    assert all(p.grad is None for p in alg.masker.parameters())
    assert all(p.requires_grad for p in alg.masker.parameters())


def test_frozen_stops_dropout_and_batchnorm_and_restores_flags():
    """A net that has both: in train mode, dropout draws and BN statistics move; frozen() stops both."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(6))
    net[0].bias.requires_grad_(False)  # a parameter already frozen by the user stays frozen
    net.train()
    x = torch.randn(16, 6)
    stats = _snapshot(net)
    assert not torch.equal(net(x), net(x)), "dropout should make two train-mode calls differ"
    assert not _same(net, stats), "train-mode BN should have moved its statistics"
    stats = _snapshot(net)
    with frozen(net):
        a, b = net(x), net(x)
        assert torch.equal(a, b) and not a.requires_grad
        assert not any(p.requires_grad for p in net.parameters())
    assert _same(net, stats)
    assert net.training
    assert net[0].weight.requires_grad and not net[0].bias.requires_grad


def test_warmup_masker_phase_and_ramp():
    """Classifier alone for W steps, then the masker alone for Wm, then l3 ramps over R."""
    alg = _align(align_warmup_steps=2, align_masker_warmup_steps=2, align_l3_ramp_steps=4, align_l3=0.2)
    mbs = _batches()
    masker = _snapshot(alg.masker)
    keys = {"loss", "ce", "align", "align_weight", "reg", "mask_loss", "mask_dist", "mask_l1",
            "mask_tv", "mask_area"}
    for _ in range(2):   # every step returns the same keys: 0 for what is not computed yet
        vals = alg.update(mbs)
        assert set(vals) == keys
        assert vals["mask_dist"] == vals["mask_loss"] == vals["align"] == vals["align_weight"] == 0
    assert _same(alg.masker, masker)
    for _ in range(2):
        vals = alg.update(mbs)
        assert set(vals) == keys and vals["mask_dist"] > 0
        assert vals["align"] == 0 and vals["align_weight"] == 0
    assert not _same(alg.masker, masker)
    weights = []
    for _ in range(5):
        vals = alg.update(mbs)
        assert set(vals) == keys and vals["align"] > 0
        weights.append(vals["align_weight"])
    assert weights == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2])
    assert int(alg.update_count) == 9  # a buffer: saved in state_dict, so resume knows the phase
    assert "update_count" in dict(alg.named_buffers())
    state = alg.state_dict()
    fresh = _align(align_warmup_steps=2, align_masker_warmup_steps=2, align_l3_ramp_steps=4, align_l3=0.2)
    fresh.load_state_dict(state)
    assert fresh.update(mbs)["align_weight"] == pytest.approx(0.2)


def test_no_ramp_is_full_weight_at_once():
    alg = _align(align_warmup_steps=1, align_masker_warmup_steps=0, align_l3_ramp_steps=0, align_l3=0.7)
    assert [alg.align_weight(t) for t in range(3)] == [0.0, 0.7, 0.7]


def test_total_variation_by_hand():
    m = torch.tensor([[[[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]]])  # (1, 1, 2, 3)
    # vertical pairs: |0-0|,|1-0|,|1-1| -> 1/3; horizontal: 1,0,0,1 -> 1/2; mean of both: 5/12
    assert float(total_variation(m)) == pytest.approx(5 / 12)


class _Capture:
    """Replaces align._descend: records the loss the step would descend, updates nothing."""

    def __init__(self):
        self.losses = []

    def __call__(self, optimizer, module, loss):
        self.losses.append(loss)


def test_masker_loss_is_the_formula(monkeypatch):
    """L_mask = MSE(p_y(x*M) - p_y(x*(1-M)), 1) + l1 mean(M) + l2 TV(M), by hand on a linear net."""
    alg = _align(align_l1=0.3, align_l2=0.7)
    torch.manual_seed(3)
    alg.network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 28 * 28, 10))
    x, y = torch.randn(5, 3, 28, 28), torch.tensor([0, 3, 3, 7, 9])
    m = torch.zeros(5, 1, 28, 28)
    m[:, :, :14] = 0.8  # top half kept: area 0.4; TV: one vertical jump of 0.8 per column
    alg.masker = _ConstantMask(m)
    capture = _Capture()
    monkeypatch.setattr(align_module, "_descend", capture)
    alg.masker_step(x, y)
    with torch.no_grad():
        p_kept = alg.network(x * m).softmax(1)[torch.arange(5), y]
        p_removed = alg.network(x * (1 - m)).softmax(1)[torch.arange(5), y]
    dist = ((p_kept - p_removed - 1) ** 2).mean()
    tv = 0.5 * (0.8 / 27 + 0.0)  # vertical: 28 jumps of 0.8 among 27 x 28 pairs; horizontal: none
    expected = dist + 0.3 * 0.4 + 0.7 * tv
    assert float(capture.losses[0].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


class _ConstantMask(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m
        self.scale = torch.nn.Parameter(torch.ones(()))  # something to descend on

    def forward(self, x):
        return self.m * self.scale


@pytest.mark.parametrize("pool", ["avg", "max", "norm"])
@pytest.mark.parametrize("create_graph", [True, False])
def test_classifier_loss_is_the_formula(monkeypatch, pool, create_graph):
    """L_clf = CE + w BCE(clamp(minmax_rel(ReLU(GradCAM_y))), pool(M)) + l4 L_reg, recomputed here."""
    alg = _align(align_target_pool=pool, align_create_graph=create_graph, align_l4=0.5, cam_rel_eps=1.5)
    x, y = _batches()[0]
    m = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    alg.masker = _ConstantMask(m)
    capture = _Capture()
    monkeypatch.setattr(align_module, "_descend", capture)
    torch.manual_seed(11)
    alg.classifier_step(x, y, align_weight=0.25)
    loss = capture.losses[0]

    torch.manual_seed(11)  # the same mixup draws
    reg = dre_regulariser(alg.network, alg.cam_layer, x, y, 10, alg.hparams).reg
    cam, logits = grad_cam(alg.network, alg.cam_layer, x, y, relu=True)
    lo, hi = cam.amin(dim=(1, 2), keepdim=True), cam.amax(dim=(1, 2), keepdim=True)
    span = torch.maximum(hi - lo, 1.5 * (hi - lo).mean())
    g = ((cam - lo) / (span + 1e-8)).clamp(1e-6, 1 - 1e-6)
    cells = m.view(8, 1, 7, 4, 7, 4)  # 28 px -> the 7x7 Grad-CAM grid, 4x4 pixels a cell
    t = cells.amax(dim=(3, 5)) if pool == "max" else cells.mean(dim=(3, 5))
    t = t[:, 0]
    if pool == "norm":
        t_lo, t_hi = t.amin(dim=(1, 2), keepdim=True), t.amax(dim=(1, 2), keepdim=True)
        t = (t - t_lo) / (t_hi - t_lo + 1e-8)
    bce = -(t * g.log() + (1 - t) * (1 - g).log()).mean()
    expected = F.cross_entropy(logits, y) + 0.5 * reg + 0.25 * bce
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


@pytest.mark.parametrize("create_graph", [True, False])
def test_alignment_in_classifier_step_reaches_featurizer_and_head_iff_create_graph(monkeypatch, create_graph):
    """Gradient of classifier_step's loss with alignment minus without it: every featurizer
    layer gets some; the head only when Grad-CAM's channel weights keep their graph."""
    alg = _align(align_create_graph=create_graph, align_l4=0.0)
    x, y = _batches()[0]
    alg.masker = _ConstantMask(torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(5)))
    capture = _Capture()
    monkeypatch.setattr(align_module, "_descend", capture)
    alg.classifier_step(x, y, align_weight=0.0)
    alg.classifier_step(x, y, align_weight=1.0)
    params = list(alg.featurizer.parameters()) + [alg.classifier.weight]
    without, with_ = (torch.autograd.grad(loss, params) for loss in capture.losses)
    diff = [float((a - b).abs().sum()) for a, b in zip(with_, without)]
    assert all(d > 1e-6 for d in diff[:-1]), "a featurizer layer gets no alignment gradient"
    assert (diff[-1] > 1e-6) == create_graph, diff[-1]


def test_masker_shapes_at_both_resolutions():
    from domainbed_align.networks import Masker
    for shape in ((3, 28, 28), (3, 224, 224)):
        m = Masker(shape, 8)(torch.randn(2, *shape))
        assert m.shape == (2, 1, *shape[1:]) and 0 <= m.min() and m.max() <= 1


def _strip(path):
    out = []
    for line in open(path):
        r = json.loads(line)
        for k in ("step_time", "mem_gb"):
            r.pop(k)
        r["args"].pop("output_dir")
        out.append(r)
    return out


@pytest.mark.slow
def test_align_resume_gives_identical_records(tmp_path):
    """Kill an ALIGN run after the masker has started, resume, compare with an unbroken run."""
    cmd = lambda out: [sys.executable, "-m", "domainbed_align.train", "--algorithm", "ALIGN",
                       "--test_envs", "3", "--steps", "24", "--checkpoint_freq", "4", "--output_dir", str(out),
                       "--hparams", '{"explain_n": 16, "batch_size": 8, "align_warmup_steps": 6}']
    subprocess.run(cmd(tmp_path / "ref"), check=True, cwd=REPO, capture_output=True)
    out = tmp_path / "resumed"
    proc = subprocess.Popen(cmd(out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import time
    while not (out / "results.jsonl").exists() or len((out / "results.jsonl").read_text().splitlines()) < 4:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not (out / "done").exists()
    subprocess.run(cmd(out), check=True, cwd=REPO, capture_output=True)
    assert _strip(out / "results.jsonl") == _strip(tmp_path / "ref" / "results.jsonl")
    records = _strip(out / "results.jsonl")
    last = records[-1]
    assert "mask_dist" in last and "env3_in_mask_epg" in last and "env3_out_mask_area" in last
    # one table: every record has the same keys, 0 for a loss before it is switched on
    assert all(set(r) == set(last) for r in records)
    assert records[0]["align"] == records[0]["mask_dist"] == 0   # before the masker and alignment


@pytest.mark.slow
def test_masker_learns_the_digit_strokes(tmp_path):
    """Without the spurious cue, the learned mask concentrates on the strokes (>= 1.5x their share)."""
    from domainbed_align.datasets.digits import make_spurious_digits
    out = tmp_path / "clean"
    run_module("domainbed_align.train", "--algorithm", "ALIGN", "--test_envs", "3", "--steps", str(STROKES_STEPS),
               "--checkpoint_freq", str(STROKES_STEPS), "--output_dir", out,
               "--hparams", json.dumps({"digits_spurious": False, "explain_n": 128,
                                        "align_warmup_steps": STROKES_WARMUP}))
    last = [json.loads(line) for line in open(out / "results.jsonl")][-1]
    stroke_share = float(sum(gt.mean() for _, _, gt, _ in make_spurious_digits(False)) / 4)
    for i in range(4):
        ratio = last[f"env{i}_out_mask_epg"] / stroke_share
        assert ratio >= 1.5, (i, ratio, last[f"env{i}_out_mask_area"])


STROKES_STEPS, STROKES_WARMUP = 300, 100


@pytest.mark.slow
def test_no_collapse_when_alignment_switches_on(tmp_path):
    """Default l3 and pool on SpuriousDigits with the shortened schedule of results/ (warm-up
    W = 300, masker alone 100, ramp 100, then 100 steps at full weight): the mean
    training-domain `out` accuracy never drops more than 5 points below its value at the end of
    the warm-up, from then to the end, i.e. 200 steps after the alignment switches on (l3 = 1
    switched on at once dropped it from 0.93 to 0.13)."""
    warmup = 300
    out = tmp_path / "run"
    run_module("domainbed_align.train", "--algorithm", "ALIGN", "--test_envs", "3",
               "--steps", str(warmup + 300), "--checkpoint_freq", "23", "--output_dir", out,  # 23 * 13 = 299
               "--hparams", json.dumps({"explain_n": 0, "align_warmup_steps": warmup,
                                        "align_masker_warmup_steps": 100, "align_l3_ramp_steps": 100}),
               timeout=1800)
    recs = {r["step"]: r for r in map(json.loads, open(out / "results.jsonl"))}
    train_out = {s: sum(r[f"env{i}_out_acc"] for i in range(3)) / 3 for s, r in recs.items()}
    ref = train_out[warmup - 1]
    assert ref > 0.8, ref  # the warm-up did learn the task
    after = {s: a for s, a in train_out.items() if s > warmup - 1}
    assert len(after) == 14 and recs[warmup + 299]["align_weight"] == hparams_registry.default_hparams(
        "ALIGN", "SpuriousDigits")["align_l3"]
    assert min(after.values()) >= ref - 0.05, (ref, after)
