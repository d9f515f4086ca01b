"""Explanation metrics on models whose right answer is known by construction."""
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from domainbed_align.explain.gradcam import grad_cam, normalize_cam, upsample_cam
from domainbed_align.explain.metrics import (_pixel_count, class_mean, explanation_metrics,
                                             faithfulness, gaussian_blur, localization,
                                             make_fill, metric_grid, pg_tolerance_px,
                                             prediction_auc, rank_pixels)

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
    assert set(r) == {"comp", "suff", "comp_rand", "suff_rand", "del", "ins", "pg", "pg_cls",
                      "epg", "iou"}
    assert all(isinstance(v, float) for v in r.values())
    assert r["pg"] == 1.0 and r["pg_cls"] == 1.0
    assert r["epg"] > 0.99
    assert r["comp"] > 0.8 * 5 / 6 and abs(r["suff"]) < 0.05
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
    r = faithfulness(top_left, s, x, ks=(10, 30), fractions=(0.0, 0.1, 0.3, 1.0))
    grid = [round(f, 6) for f in r["fractions"].tolist()]
    assert grid == [0.0, 0.1, 0.3, 1.0]
    p0 = r["del_curve"][:, 0]
    torch.testing.assert_close(r["ins_curve"][:, -1], p0)
    expected = (2 * p0 - r["del_curve"][:, 1] - r["del_curve"][:, 2]) / 3  # |B| + 1 = 3
    torch.testing.assert_close(r["comp"], expected)
    blurred = top_left(gaussian_blur(x, 0.1 * SIZE)).softmax(1)[:, 1]
    torch.testing.assert_close(r["ins_curve"][:, 0], blurred)  # insertion starts blurred
    filled = top_left(torch.zeros_like(x)).softmax(1)[:, 1]
    torch.testing.assert_close(r["del_curve"][:, -1], filled)  # deletion ends at the fill


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


# ------------------------------------------------------------------ hand-computed definitions
class MeanReader(nn.Module):
    """p(class 1) = 0.1 + 0.8 * mean of channel 0, exactly (logits are log-probabilities)."""

    def forward(self, x):
        p = 0.1 + 0.8 * x[:, 0].double().mean(dim=(1, 2))
        return torch.stack([torch.log1p(-p), torch.log(p)], dim=1)


def ten_pixels():
    """One 1x10 image: six ones then four zeros; saliency = the image (ties by index)."""
    x = torch.tensor([[1.0] * 6 + [0.0] * 4]).view(1, 1, 1, 10)
    return x, x[:, 0].clone()


def test_pixel_count_rounds_half_up():
    assert _pixel_count(0.01, 784) == 8  # 7.84
    assert _pixel_count(0.01, 10) == 0  # 0.1: 1% of ten pixels removes nothing
    assert _pixel_count(0.05, 10) == 1  # 0.5 exactly rounds up
    assert _pixel_count(0.05, 30) == 2  # 1.5
    assert _pixel_count(0.5, 5) == 3  # 2.5
    assert _pixel_count(0.04, 10) == 0 and _pixel_count(0.06, 10) == 1  # either side of 0.5
    assert _pixel_count(1.0, 10) == 10 and _pixel_count(0.0, 10) == 0


def test_comp_suff_aopc_exact_values_and_signs():
    """p(x) = 0.58; removing n of the six ones costs 0.08 n, keeping only them gives 0.1 + 0.08 n.

    ks 10/20/50% of 10 px = 1/2/5 px. comp = (.08 + .16 + .40) / (3 + 1) = 0.16;
    suff = (.40 + .32 + .08) / 4 = 0.20 (positive: keeping the top pixels loses probability).
    """
    x, s = ten_pixels()
    r = faithfulness(MeanReader(), s, x, ks=(10, 20, 50), fractions=(0.0, 1.0))
    assert r["comp"].item() == pytest.approx(0.16, abs=1e-6)
    assert r["suff"].item() == pytest.approx(0.20, abs=1e-6)
    # the random control draws one k per sample: the AOPC of that k, times |B| / (|B| + 1)
    x1 = torch.ones(1, 1, 1, 10)
    r1 = faithfulness(MeanReader(), torch.rand(1, 1, 10), x1, ks=(10, 20, 50), seed=5)
    assert any(r1["comp_rand"].item() == pytest.approx(0.08 * n * 3 / 4) for n in (1, 2, 5))
    assert any(r1["suff_rand"].item() == pytest.approx((0.8 - 0.08 * n) * 3 / 4)
               for n in (1, 2, 5))


def test_aopc_denominator_counts_the_k0_bin():
    """Default ks on 10 px remove 0, 1, 1, 2, 5 px: comp = .08 * 9 / 6 = 0.12 (ERASER)."""
    x, s = ten_pixels()
    r = faithfulness(MeanReader(), s, x)
    assert r["comp"].item() == pytest.approx(0.08 * 9 / 6, abs=1e-6)
    assert r["suff"].item() == pytest.approx((0.48 * 5 - 0.08 * 9) / 6, abs=1e-6)


def test_deletion_insertion_trapezoid_by_hand():
    """Grid 0, .1, .2, .5, 1 = 0, 1, 2, 5, 10 px.
    deletion  p = .58 .50 .42 .18 .10 -> .1*1.08/2 + .1*.92/2 + .3*.60/2 + .5*.28/2 = 0.26
    insertion (start = zeros) p = .10 .18 .26 .50 .58 -> .014 + .022 + .114 + .27 = 0.42
    """
    x, s = ten_pixels()
    r = faithfulness(MeanReader(), s, x, fractions=(0.0, 0.1, 0.2, 0.5, 1.0),
                     insertion_start=torch.zeros_like(x))
    torch.testing.assert_close(r["del_curve"][0], torch.tensor(
        [0.58, 0.50, 0.42, 0.18, 0.10], ))
    assert r["del"].item() == pytest.approx(0.26, abs=1e-6)
    assert r["ins"].item() == pytest.approx(0.42, abs=1e-6)
    # a start of 0.5 everywhere: p(start) = 0.5, and each inserted top pixel adds 0.04
    half = torch.full_like(x, 0.5)
    r = faithfulness(MeanReader(), s, x, fractions=(0.0, 0.5, 1.0), insertion_start=half)
    torch.testing.assert_close(r["ins_curve"][0], torch.tensor(
        [0.5, 0.5 + 0.04 * 5, 0.58], ))


def test_default_insertion_start_is_the_blurred_image():
    x, s = ten_pixels()
    x = x.expand(1, 3, 1, 10).contiguous()
    r = faithfulness(MeanReader(), s, x, blur_sigma_rel=0.2)
    expected = 0.1 + 0.8 * gaussian_blur(x, 0.2 * 10)[:, 0].mean()
    assert r["ins_curve"][0, 0].item() == pytest.approx(expected.item(), abs=1e-6)
    assert r["del_curve"][0, -1].item() == pytest.approx(0.1)  # deletion ends at the fill 0


def test_forward_count_per_image():
    """The cost stated in faithfulness' docstring: 19 forwards per image by default (13 with a
    blur fill, where sufficiency and insertion are the same images)."""
    calls = []

    class Counting(MeanReader):
        def forward(self, x):
            calls.append(len(x))
            return super().forward(x)

    x = torch.rand(3, 3, 10, 10)  # 100 px: every k is a distinct count
    s = torch.rand(3, 10, 10)
    faithfulness(Counting(), s, x, clean_logits=MeanReader()(x), chunk_size=10_000)
    assert sum(calls) == 3 * 19
    calls.clear()
    faithfulness(Counting(), s, x, fill="blur", clean_logits=MeanReader()(x), chunk_size=10_000)
    assert sum(calls) == 3 * 13


def test_grid_is_configurable_and_validated():
    assert metric_grid(0) == (0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
    grid = metric_grid(51)
    assert len(grid) == 51 and grid[0] == 0.0 and grid[-1] == 1.0 and grid[1] == 0.02
    for bad in (1, -3):
        with pytest.raises(ValueError, match="explain_grid_points"):
            metric_grid(bad)
    x, s = ten_pixels()
    with pytest.raises(ValueError, match="ks in"):
        faithfulness(MeanReader(), s, x, ks=(0, 10))


class BlobCounter(nn.Module):
    """logit(blob) = 8 (sum relu(x_0 - 1.5) / 13.5 - 0.5): every blob pixel (3.0) adds evidence,
    the blurred blob (peak ~0.4) none. TopLeftOnly's max pool is all-or-nothing, so there a
    random and an inverted map tie on the default grid (deletion 0.75 both: no point between
    50% and 100%); a graded model is what a grid comparison needs."""

    def forward(self, x):
        z = 8 * (torch.relu(x[:, 0] - 1.5).sum(dim=(1, 2)) / 13.5 - 0.5)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def test_rankings_agree_on_default_and_51_point_grids():
    """Oracle (the blob), constant (raster order), random and inverted maps rank the same,
    with clear gaps, by deletion and by insertion on the default and on a 51-point grid."""
    n = 8
    x, blob = blob_images(n=n, seed=2, noise=0.0)
    g = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    oracle = blob[:, 0] + 0.01 * torch.rand(n, SIZE, SIZE, generator=g(1))
    maps = {"oracle": oracle, "constant": torch.zeros(n, SIZE, SIZE),
            "random": torch.rand(n, SIZE, SIZE, generator=g(2)), "inverted": 1 - oracle}
    for key, sign in (("del", -1), ("ins", +1)):
        for points in (0, 51):
            score = {name: sign * faithfulness(BlobCounter(), s, x, fractions=metric_grid(points))
                     [key].mean().item() for name, s in maps.items()}
            ranked = sorted(score, key=score.get, reverse=True)
            assert ranked == ["oracle", "constant", "random", "inverted"], (key, points, score)
            gaps = [score[a] - score[b] for a, b in zip(ranked, ranked[1:])]
            assert min(gaps) > 0.1, (key, points, score)


def test_pointing_game_tolerance_at_the_exact_boundary():
    """Maximum at (0, 0); the only mask pixel at distance 2 (0, 2) or sqrt(2) (1, 1)."""
    s = torch.zeros(1, 5, 5)
    s[0, 0, 0] = 1.0
    m = torch.zeros(1, 5, 5)
    m[0, 0, 2] = 1
    pg = lambda tol, mask=m: localization(s, mask, tolerance_px=tol)["pg"].item()  # noqa: E731
    assert pg(0.0) == 0.0
    assert pg(2.0) == 0.0  # distance == tolerance: outside TorchRay's open disc
    assert pg(2.0 + 1e-6) == 1.0
    diag = torch.zeros(1, 5, 5)
    diag[0, 1, 1] = 1
    assert pg(math.sqrt(2)) == 0.0 and pg(1.5, diag) == 1.0 and pg(1.0, diag) == 0.0
    inside = torch.zeros(1, 5, 5)
    inside[0, 0, 0] = 1
    assert pg(0.0, inside) == 1.0  # tolerance 0: the maximum must lie in the mask


def test_pointing_game_tolerance_scales_with_the_shorter_side():
    assert pg_tolerance_px(15, 224, 224) == 15.0
    assert pg_tolerance_px(15, 28, 28) == 1.875
    assert pg_tolerance_px(15, 112, 300) == 7.5


def test_per_class_pointing_game_average():
    """Hits 1, 0 (class 0), 1 (class 1), 1 (class 2), NaN (class 3, empty mask):
    sample mean 3/4, class mean (1/2 + 1 + 1) / 3."""
    pg = torch.tensor([1.0, 0.0, 1.0, 1.0, float("nan")])
    y = torch.tensor([0, 0, 1, 2, 3])
    assert pg.nanmean().item() == 0.75
    assert class_mean(pg, y) == pytest.approx(2.5 / 3)
    assert math.isnan(class_mean(torch.tensor([float("nan")]), torch.tensor([1])))


def test_energy_pointing_game_on_the_raw_map():
    """Map [[2, 1], [1, 1]] (minimum 1 > 0), mask top-left: energy 2 / 5, not min-max's 1."""
    s = torch.tensor([[[2.0, 1.0], [1.0, 1.0]]])
    m = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert localization(s, m)["epg"].item() == pytest.approx(0.4)
    with pytest.raises(ValueError, match="non-negative"):
        localization(s - 1.5, m)


def test_iou_of_top_q_pixels():
    """Mask {0, 2} (q = 2); top-2 saliency {0, 1}: IoU = 1 / 3. Ties by pixel index."""
    s = torch.tensor([[[0.9, 0.8], [0.1, 0.7]]])
    m = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert localization(s, m)["iou"].item() == pytest.approx(1 / 3)
    flat = torch.zeros(1, 2, 2)  # ties: top-2 = pixels 0, 1
    assert localization(flat, m)["iou"].item() == pytest.approx(1 / 3)


class OffsetCam(nn.Module):
    """A = x_0 + 1 (minimum 1), logits = (-mean A, +mean A): Grad-CAM(1) = A / 4 on 2x2 inputs,
    Grad-CAM(0) = -A / 4 (all zero after ReLU)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.fill_(1.0)

    def forward(self, x):
        a = self.conv(x).mean(dim=(1, 2, 3))
        return torch.stack([-a, a], dim=1)


def test_localisation_explains_the_true_class_on_the_raw_map():
    model = OffsetCam()
    x = torch.tensor([[[[3.0, 0.0], [0.0, 0.0]]]]).repeat(2, 1, 1, 1)  # A = [[4, 1], [1, 1]]
    m = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]).repeat(2, 1, 1)
    y = torch.tensor([1, 0])  # both predicted 1; the second is wrong
    r = explanation_metrics(model, model.conv, x, y, masks=m)
    # sample 0: raw CAM A / 4 -> hit, energy 4 / 7, IoU 1; sample 1: CAM of class 0 is all zero
    assert r["pg"] == 0.5 and r["pg_cls"] == 0.5
    assert r["epg"] == pytest.approx((4 / 7 + 0) / 2)
    assert r["iou"] == pytest.approx((1 + 1 / 1) / 2)  # flat map: top-1 by index = pixel 0
    r1 = explanation_metrics(model, model.conv, x, torch.tensor([1, 1]), masks=m)
    assert r1["pg"] == 1.0 and r1["epg"] == pytest.approx(4 / 7)


# ------------------------------------------------- boundaries, defaults and pass-through (13)
def _full(msg):
    """pytest.raises(match=...) pattern for exactly this message."""
    return "^" + re.escape(msg) + "$"


def test_error_messages_name_the_shapes():
    x = torch.zeros(3, 1, 4, 4)  # C != B, so a swapped axis shows in the message
    model = OffsetCam()
    with pytest.raises(ValueError, match=_full("x has 3 samples but y has 2")):
        explanation_metrics(model, model.conv, x, torch.zeros(2, dtype=torch.long))
    x, _ = ten_pixels()
    with pytest.raises(ValueError, match=_full(
            "saliency must be (B, H, W) = (1, 1, 10), got (1, 2, 5)")):
        faithfulness(MeanReader(), torch.zeros(1, 2, 5), x)
    with pytest.raises(ValueError, match=_full(
            "mask shape (1, 3, 3) does not match saliency (1, 2, 2); resize masks to the input "
            "size")):
        localization(torch.zeros(1, 2, 2), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match=_full(
            "localization needs a non-negative map (ReLU the Grad-CAM first)")):
        localization(-torch.ones(1, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=_full(
            "unknown fill 'noise'; use a float (normalised value) or 'blur'")):
        make_fill(x, "noise")
    with pytest.raises(ValueError, match=_full("probs must be (B, 3), got (6, 2)")):
        prediction_auc(np.full((6, 2), 0.5), np.array([0, 1, 2, 0, 1, 2]), 3)
    with pytest.raises(ValueError, match=re.escape("got (6,)")):
        prediction_auc(np.full(6, 0.5), np.array([0, 1, 2, 0, 1, 2]), 3)


def test_prediction_auc_accepts_probabilities_attached_to_a_graph():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]], requires_grad=True)
    assert prediction_auc(logits.softmax(1), torch.tensor([0, 1, 0]), 2) == 1.0


def test_gaussian_blur_of_an_impulse_is_the_truncated_kernel():
    """A unit impulse blurs into exp(-t^2 / 2 sigma^2) / sum over |t| <= max(1, ceil(3 sigma)),
    in both directions (separable: the 2-D response is the outer product); dtype is kept."""
    def kernel(sigma):
        r = max(1, math.ceil(3 * sigma))
        g = [math.exp(-0.5 * (t / sigma) ** 2) for t in range(-r, r + 1)]
        return [v / sum(g) for v in g]

    for sigma in (1.0, 0.3, 0.7):
        k = kernel(sigma)
        x = torch.zeros(1, 1, 1, 11, dtype=torch.float64)
        x[..., 5] = 1.0
        out = gaussian_blur(x, sigma)
        assert out.dtype == torch.float64
        r = len(k) // 2
        expected = torch.zeros(11, dtype=torch.float64)
        expected[5 - r:5 + r + 1] = torch.tensor(k, dtype=torch.float64)
        torch.testing.assert_close(out[0, 0, 0], expected, rtol=0, atol=1e-12)
    k = torch.tensor(kernel(1.0), dtype=torch.float64)
    x = torch.zeros(1, 2, 9, 9, dtype=torch.float64)
    x[0, 0, 4, 4] = 1.0  # channel 1 stays zero: channels do not mix
    out = gaussian_blur(x, 1.0)
    torch.testing.assert_close(out[0, 0, 1:8, 1:8], torch.outer(k, k), rtol=0, atol=1e-12)
    assert out[0, 1].abs().max() == 0 and out[0, 0, 0].abs().max() == 0


def test_make_fill_defaults_dtype_and_blur_sigma():
    x = torch.rand(1, 5, 2, 3, dtype=torch.float64)  # more channels than rows or columns
    const = make_fill(x)
    assert const.shape == (1, 1, 1, 1) and const.item() == 0.0 and const.dtype == torch.float64
    assert make_fill(x, 0.5).dtype == torch.float64 and make_fill(x, 0.5).item() == 0.5
    torch.testing.assert_close(make_fill(x, "blur"), gaussian_blur(x, 0.1 * 3), rtol=0, atol=0)
    torch.testing.assert_close(make_fill(x, "blur", 0.5), gaussian_blur(x, 1.5), rtol=0, atol=0)


def test_metric_grid_default_and_the_smallest_grid():
    assert metric_grid() == (0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
    assert metric_grid(2) == (0.0, 1.0)


def test_faithfulness_validation_boundaries():
    x, s = ten_pixels()
    with pytest.raises(ValueError, match="fractions must lie in"):
        faithfulness(MeanReader(), s, x, fractions=(0.0, 1.5))
    with pytest.raises(ValueError, match="ks in"):
        faithfulness(MeanReader(), s, x, ks=(100.5,))
    r = faithfulness(MeanReader(), s, x, ks=(100,))  # k = 100% is allowed: remove everything
    assert r["comp"].item() == pytest.approx((0.58 - 0.10) / 2, abs=1e-6)
    assert r["suff"].item() == pytest.approx(0.0, abs=1e-6)


def test_grid_always_spans_zero_to_one():
    """Grid (0.5,) becomes 0, .5, 1 = 0, 5, 10 px: p = .58 .18 .10, area .19 + .07 = 0.26."""
    x, s = ten_pixels()
    r = faithfulness(MeanReader(), s, x, fractions=(0.5,))
    assert r["fractions"].tolist() == [0.0, 0.5, 1.0]
    assert r["del"].item() == pytest.approx(0.26, abs=1e-6)


def test_faithfulness_is_per_sample():
    """Sample 1 is all zeros: predicted class 0 with p = 0.9 whatever is removed or kept, so
    comp and suff are 0 and both areas 0.9."""
    x, s = ten_pixels()
    x2, s2 = torch.cat([x, torch.zeros_like(x)]), torch.cat([s, torch.zeros_like(s)])
    r = faithfulness(MeanReader(), s2, x2, ks=(10, 20, 50), fractions=(0.0, 0.1, 0.2, 0.5, 1.0),
                     insertion_start=torch.zeros_like(x2))
    torch.testing.assert_close(r["comp"], torch.tensor([0.16, 0.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(r["suff"], torch.tensor([0.20, 0.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(r["del"], torch.tensor([0.26, 0.9]), rtol=0, atol=1e-6)
    torch.testing.assert_close(r["ins"], torch.tensor([0.42, 0.9]), rtol=0, atol=1e-6)


def test_fill_value_and_blur_sigma_reach_the_deletion_curve():
    """Deletion ends at the all-fill image: p = 0.1 + 0.8 * mean(fill)."""
    x, s = ten_pixels()
    r = faithfulness(MeanReader(), s, x, fill=0.5)
    assert r["del_curve"][0, -1].item() == pytest.approx(0.5, abs=1e-6)
    r = faithfulness(MeanReader(), s, x, fill="blur", blur_sigma_rel=0.3)
    expected = 0.1 + 0.8 * gaussian_blur(x, 0.3 * 10).mean().item()
    assert r["del_curve"][0, -1].item() == pytest.approx(expected, abs=1e-6)
    assert r["ins_curve"][0, 0].item() == pytest.approx(expected, abs=1e-6)


def test_random_control_default_seed_is_zero():
    x = torch.rand(4, 1, 1, 10, generator=torch.Generator().manual_seed(0))
    s = x[:, 0].clone()
    a, b = faithfulness(MeanReader(), s, x), faithfulness(MeanReader(), s, x, seed=0)
    c = faithfulness(MeanReader(), s, x, seed=1)
    assert torch.equal(a["comp_rand"], b["comp_rand"])
    assert torch.equal(a["suff_rand"], b["suff_rand"])
    assert not torch.equal(a["comp_rand"], c["comp_rand"])


def test_tensors_are_made_on_the_input_device():
    """Every tensor the metrics create follows the input's device (checked with 'meta' tensors,
    and, for localization, with 'meta' as the default device while the inputs are on the CPU)."""
    meta = torch.device("meta")
    assert rank_pixels(torch.zeros(2, 3, 3, device=meta)).device == meta
    assert gaussian_blur(torch.zeros(1, 2, 5, 5, device=meta), 1.0).device == meta
    assert make_fill(torch.zeros(1, 2, 5, 5, device=meta), 0.5).device == meta
    r = faithfulness(MeanReader(), torch.zeros(2, 1, 10, device=meta),
                     torch.zeros(2, 1, 1, 10, device=meta), fill="blur")
    r.update(faithfulness(MeanReader(), torch.zeros(2, 1, 10, device=meta),
                          torch.zeros(2, 1, 1, 10, device=meta)))
    assert all(v.device == meta for v in r.values())
    s = torch.tensor([[[0.0, 2.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]])
    m = torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    expected, blurred = localization(s, m), gaussian_blur(s[:, None], 1.0)
    with meta:
        got = localization(s, m)
        assert torch.equal(gaussian_blur(s[:, None], 1.0), blurred)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], equal_nan=True)


def test_localization_threshold_row_column_and_tolerance_square():
    s = torch.zeros(1, 5, 5)
    s[0, 1, 2] = 1.0  # maximum at row 1, column 2 (pixel 7)
    m = torch.zeros(1, 5, 5)
    m[0, 1, 2] = 0.5  # exactly the threshold: in the mask (>=)
    loc = localization(s, m)
    assert loc["pg"].item() == 1.0 and loc["iou"].item() == 1.0
    m = torch.zeros(1, 5, 5)
    m[0, 3, 4] = 1  # distance sqrt(8) from (1, 2)
    assert localization(s, m, tolerance_px=3.0)["pg"].item() == 1.0
    assert localization(s, m, tolerance_px=2.5)["pg"].item() == 0.0
    assert localization(s, m, tolerance_px=2.9)["pg"].item() == 1.0


def test_energy_pointing_game_eps_is_added_to_the_mass():
    s = torch.tensor([[[2.0, 1.0], [1.0, 1.0]]])
    m = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert localization(s, m, eps=1.0)["epg"].item() == pytest.approx(2 / 6)


def _minmax_cam(model, x):
    cam, _ = grad_cam(model, model.conv, x, relu=True)
    return normalize_cam(upsample_cam(cam.detach(), x.shape[-2:]))


def test_explanation_metrics_passes_its_arguments_to_faithfulness():
    model = OffsetCam()
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    y = torch.ones(3, dtype=torch.long)
    kw = dict(fill=0.5, ks=(30,), fractions=(0.25,), seed=3)
    expected = faithfulness(model, _minmax_cam(model, x), x, **kw)
    r = explanation_metrics(model, model.conv, x, y, chunk_size=2, **kw)
    for k in ("comp", "suff", "comp_rand", "suff_rand", "del", "ins"):
        assert r[k] == pytest.approx(expected[k].mean().item(), abs=1e-6), k
    defaults = explanation_metrics(model, model.conv, x, y)
    assert defaults == explanation_metrics(model, model.conv, x, y, fill=0.0, seed=0)
    assert defaults != explanation_metrics(model, model.conv, x, y, fill=1.0)
    assert defaults["comp_rand"] != explanation_metrics(model, model.conv, x, y, seed=1)[
        "comp_rand"]


def test_explanation_metrics_forwards_in_chunks_once_per_image():
    """B = 3 images of 100 px, 2 of them predicted wrongly, chunks of 2: one saliency forward per
    image, 19 perturbations per image (the clean logits are reused), one more Grad-CAM forward
    per wrong prediction; no forward holds more than chunk_size images."""
    calls = []

    class Counting(OffsetCam):
        def forward(self, x):
            calls.append(len(x))
            return super().forward(x)

    model = Counting()
    x = torch.rand(3, 1, 10, 10, generator=torch.Generator().manual_seed(0))  # all predict 1
    y = torch.tensor([1, 0, 0])
    explanation_metrics(model, model.conv, x, y, masks=torch.ones(3, 10, 10), chunk_size=2)
    assert sum(calls) == 3 + 3 * 19 + 2 and max(calls) <= 2


def test_wrong_predictions_are_found_per_sample():
    """Sample 0: x = -3, A = -2, logits (2, -2): predicted 0 = y. Sample 1: A = [[4, 1], [1, 1]],
    logits (-1.75, 1.75): predicted 1, y = 0, so its map is the all-zero CAM of class 0 (miss),
    not the CAM of class 1 (a hit on the top-left mask)."""
    model = OffsetCam()
    x = torch.stack([torch.full((1, 2, 2), -3.0), torch.tensor([[[3.0, 0.0], [0.0, 0.0]]])])
    m = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]).repeat(2, 1, 1)
    r = explanation_metrics(model, model.conv, x, torch.tensor([0, 0]), masks=m)
    assert r["pg"] == 0.0 and r["pg_cls"] == 0.0
    assert r["epg"] == pytest.approx((0.25 + 0.0) / 2)


def test_explanation_metrics_scales_the_pointing_tolerance():
    """16 px input: 15 px at 224 is 15 * 16 / 224 = 1.07 px, enough for a mask pixel next to the
    maximum (distance 1); 13 px at 224 (0.93 px) and 0 are not."""
    model = OffsetCam()
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 0, 0] = 3.0  # A = 4 there, 1 elsewhere: the maximum is pixel (0, 0)
    m = torch.zeros(1, 16, 16)
    m[0, 0, 1] = 1
    y = torch.tensor([1])
    assert explanation_metrics(model, model.conv, x, y, masks=m)["pg"] == 1.0
    for tol in (13.0, 0.0):
        assert explanation_metrics(model, model.conv, x, y, masks=m,
                                   pg_tolerance_px224=tol)["pg"] == 0.0
