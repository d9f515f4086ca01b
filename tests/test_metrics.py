"""Explanation metrics on models whose right answer is known by construction."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from domainbed_align.explain.metrics import (explanation_metrics, faithfulness, localization,
                                             make_fill, prediction_auc, rank_pixels)

SIZE = 32  # 1% of 32x32 is 10 pixels, just more than the 3x3 blob
BLOB = 3


class TopLeftOnly(nn.Module):
    """Reads only the top-left quadrant: p(blob) = sigmoid(gain * (max relu(x_0) - threshold)).

    With a max pool the 9 blob pixels carry all the evidence: keeping them keeps the
    prediction (sufficiency 0), removing them kills it (comprehensiveness ~ p), and a random
    map almost never removes all nine.
    """

    def __init__(self, size: int = SIZE, gain: float = 4.0, threshold: float = 1.5):
        super().__init__()
        q = torch.zeros(1, 1, size, size)
        q[..., :size // 2, :size // 2] = 1
        self.register_buffer("quadrant", q)
        self.conv = nn.Conv2d(3, 1, 1, bias=False)  # the CAM layer: A = x_0 on the quadrant
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
            self.head.weight.copy_(torch.tensor([[0.0], [gain]]))
            self.head.bias.copy_(torch.tensor([0.0, -gain * threshold]))

    def forward(self, x):
        a = torch.relu(self.conv(x * self.quadrant))  # (B, 1, H, W)
        return self.head(a.amax(dim=(2, 3)))  # (B, 2)


def blob_images(n: int = 16, seed: int = 0, noise: float = 0.3, amplitude: float = 3.0):
    """Noise images with a bright 3x3 blob in channel 0 somewhere in the top-left quadrant."""
    g = torch.Generator().manual_seed(seed)
    x = noise * torch.randn(n, 3, SIZE, SIZE, generator=g)
    blob_masks = torch.zeros(n, 1, SIZE, SIZE)
    rows = torch.randint(0, SIZE // 2 - BLOB + 1, (n,), generator=g)
    cols = torch.randint(0, SIZE // 2 - BLOB + 1, (n,), generator=g)
    for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
        x[i, 0, r:r + BLOB, c:c + BLOB] += amplitude
        blob_masks[i, 0, r:r + BLOB, c:c + BLOB] = 1
    return x, blob_masks


def quadrant_masks(n: int) -> torch.Tensor:
    m = torch.zeros(n, 1, SIZE, SIZE)
    m[..., :SIZE // 2, :SIZE // 2] = 1
    return m


class Constant(nn.Module):
    """Logits independent of x (a zero head on real conv features)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.copy_(torch.tensor([0.3, -0.2, 1.0]))

    def forward(self, x):
        return self.head(self.conv(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def top_left():
    return TopLeftOnly().eval()


def test_known_model_scores(top_left):
    x, _ = blob_images()
    y = torch.ones(len(x), dtype=torch.long)
    assert top_left(x).argmax(1).eq(1).all()
    r = explanation_metrics(top_left, top_left.conv, x, y, masks=quadrant_masks(len(x)))
    assert set(r) == {"comp", "suff", "comp_rand", "suff_rand", "del", "ins", "pg", "epg", "iou"}
    assert all(isinstance(v, float) for v in r.values())
    assert r["pg"] == 1.0
    assert r["epg"] > 0.99
    assert r["comp"] > 0.8 and abs(r["suff"]) < 0.05
    assert r["comp"] > r["comp_rand"] + 0.5
    assert r["suff_rand"] > r["suff"] + 0.3
    assert r["ins"] > r["del"] + 0.5


def test_iou_against_blob_masks(top_left):
    x, blob_masks = blob_images()
    y = torch.ones(len(x), dtype=torch.long)
    r = explanation_metrics(top_left, top_left.conv, x, y, masks=blob_masks)
    assert r["iou"] > 0.9 and r["pg"] == 1.0


def test_constant_model_is_unfaithful_by_zero():
    torch.manual_seed(0)
    model = Constant().eval()
    x = torch.randn(6, 3, 12, 12)
    r = explanation_metrics(model, model.conv, x, torch.zeros(6, dtype=torch.long))
    for k in ("comp", "suff", "comp_rand", "suff_rand"):
        assert abs(r[k]) < 1e-6, k
    p = torch.softmax(torch.tensor([0.3, -0.2, 1.0]), 0).max().item()
    assert math.isclose(r["del"], p, abs_tol=1e-6) and math.isclose(r["ins"], p, abs_tol=1e-6)


def test_rank_ties_break_by_pixel_index():
    s = torch.tensor([[[0.5, 1.0], [0.5, 1.0]]])
    assert rank_pixels(s).tolist() == [[2, 0, 3, 1]]
    assert rank_pixels(torch.zeros(2, 3, 3)).tolist() == [list(range(9))] * 2


def test_deterministic_with_ties(top_left):
    x, _ = blob_images(n=8, seed=1)
    s = torch.rand(8, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    s = (s * 4).floor() / 4  # only 4 distinct values: plenty of ties
    a = faithfulness(top_left, s, x, seed=3)
    b = faithfulness(top_left, s, x, seed=3, chunk_size=37)  # chunks straddle samples
    for k in ("comp", "suff", "comp_rand", "suff_rand", "del", "ins"):
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    y = torch.ones(8, dtype=torch.long)
    m = quadrant_masks(8)
    assert (explanation_metrics(top_left, top_left.conv, x, y, masks=m)
            == explanation_metrics(top_left, top_left.conv, x, y, masks=m))
    c = faithfulness(top_left, s, x, seed=4)
    assert not torch.equal(a["comp_rand"], c["comp_rand"])  # the seed does drive the control


def test_curves_share_forwards_with_comp_suff(top_left):
    x, _ = blob_images(n=4)
    s = torch.rand(4, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    r = faithfulness(top_left, s, x, ks=(10, 30))
    grid = [round(f, 6) for f in r["fractions"].tolist()]
    assert grid[0] == 0.0 and grid[-1] == 1.0 and 0.1 in grid and 0.3 in grid
    p0 = r["del_curve"][:, 0]
    torch.testing.assert_close(r["ins_curve"][:, -1], p0)
    torch.testing.assert_close(r["del_curve"][:, -1], r["ins_curve"][:, 0])
    expected = p0 - (r["del_curve"][:, grid.index(0.1)] + r["del_curve"][:, grid.index(0.3)]) / 2
    torch.testing.assert_close(r["comp"], expected)


def test_localization_empty_masks_and_flat_maps():
    s = torch.zeros(3, 4, 4)
    s[0, 0, 0] = 1.0
    s[1, 3, 3] = 1.0  # s[2] is flat: points nowhere
    m = torch.zeros(3, 4, 4)
    m[:, :2, :2] = 1
    loc = localization(s, m)
    assert loc["pg"].tolist() == [1.0, 0.0, 0.0]
    assert loc["epg"][0].item() == pytest.approx(1.0) and loc["epg"][1].item() == 0.0
    m[1] = 0  # empty mask: excluded
    loc = localization(s, m.unsqueeze(1))
    assert math.isnan(loc["pg"][1]) and loc["pg"].nanmean().item() == 0.5
    assert math.isnan(localization(s, torch.zeros(3, 4, 4))["iou"].nanmean())


def test_blur_fill_and_modes_and_no_grad_leak(top_left):
    const = torch.full((2, 3, 10, 10), 0.7)
    torch.testing.assert_close(make_fill(const, "blur"), const)
    with pytest.raises(ValueError):
        make_fill(const, "noise")

    model = TopLeftOnly().train()
    model.head.eval()  # a mixed-mode model must come back mixed
    x, m = blob_images(n=4)
    r = explanation_metrics(model, model.conv, x, torch.ones(4, dtype=torch.long), masks=m,
                            fill="blur")
    assert all(math.isfinite(v) for v in r.values())
    assert model.training and model.conv.training and not model.head.training
    assert all(p.grad is None for p in model.parameters())


def test_prediction_auc():
    y = np.array([0, 1, 2, 2, 1, 0])
    perfect = np.eye(3)[y]
    assert prediction_auc(perfect, y, 3) == 1.0

    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=200)
    logits = rng.normal(size=(200, 4)) + np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert prediction_auc(torch.tensor(probs), torch.tensor(y), 4) == pytest.approx(
        roc_auc_score(y, probs, multi_class="ovr", average="macro"))

    present = y != 3  # class 3 absent: average over the three present
    expected = np.mean([roc_auc_score(y[present] == c, probs[present, c]) for c in range(3)])
    assert prediction_auc(probs[present], y[present], 4) == pytest.approx(expected)
    assert math.isnan(prediction_auc(probs[:3], np.zeros(3, dtype=int), 4))
