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
from domainbed_align.explain.gradcam import grad_cam, normalize_cam


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
    alg = _align(align_warmup_steps=0, resnet_dropout=0.5)
    x, y = torch.cat([b[0] for b in _batches()]), torch.cat([b[1] for b in _batches()])
    alg.train()
    net, masker = _snapshot(alg.network), _snapshot(alg.masker)
    alg.masker_step(x, y)
    assert _same(alg.network, net), "classifier changed during the masker step"
    assert not _same(alg.masker, masker)
    assert all(p.grad is None for p in alg.network.parameters())
    assert alg.network.training, "the classifier's train mode must come back"
    masker = _snapshot(alg.masker)
    with torch.no_grad():
        pass
    from domainbed_align.algorithms.align import frozen
    with frozen(alg.masker):
        alg.classifier_step(x, y, align=True)
    assert _same(alg.masker, masker), "masker changed during the classifier step"
    assert not _same(alg.network, net)
    assert all(p.requires_grad for p in alg.masker.parameters())


def test_frozen_resnet_batchnorm_state_does_not_change():
    hp = hparams_registry.default_hparams("ALIGN", "VLCS")
    hp.update(pretrained=False, resnet18=True, align_warmup_steps=0)
    alg = get_algorithm_class("ALIGN")((3, 64, 64), 5, 1, hp)
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 5, (4,))
    net = _snapshot(alg.network)
    alg.masker_step(x, y)
    assert _same(alg.network, net)  # running stats included


def test_warmup_is_respected():
    alg = _align(align_warmup_steps=3)
    mbs = _batches()
    masker = _snapshot(alg.masker)
    for _ in range(3):
        vals = alg.update(mbs)
        assert "mask_dist" not in vals and "align" not in vals
    assert _same(alg.masker, masker)
    vals = alg.update(mbs)
    assert {"loss", "ce", "align", "reg", "mask_dist", "mask_l1", "mask_tv", "mask_area"} <= set(vals)
    assert not _same(alg.masker, masker)
    assert int(alg.update_count) == 4  # a buffer: saved in state_dict, so resume knows the phase
    assert "update_count" in alg.state_dict()


@pytest.mark.parametrize("create_graph", [True, False])
def test_alignment_gradient_reaches_featurizer(create_graph):
    alg = _align()
    x, y = _batches()[0]
    cam, _ = grad_cam(alg.network, alg.cam_layer, x, y, create_graph=create_graph,
                      detach_weights=not create_graph, relu=True)
    target = torch.rand_like(cam)
    loss = F.binary_cross_entropy(normalize_cam(cam).clamp(1e-6, 1 - 1e-6), target)
    feats = list(alg.featurizer.parameters())
    grads = torch.autograd.grad(loss, feats + [alg.classifier.weight], allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads[:-1]), "a featurizer layer gets no alignment gradient"
    head = grads[-1]
    assert (head is not None and head.abs().sum() > 0) == create_graph


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
    last = _strip(out / "results.jsonl")[-1]
    assert "mask_dist" in last and "env3_in_mask_epg" in last and "env3_out_mask_area" in last


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
