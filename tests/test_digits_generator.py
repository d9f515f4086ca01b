"""The SpuriousDigits generator: cue agreement per domain, masks that belong to their image."""
import numpy as np
import pytest
import torch

from domainbed_align.datasets import digits
from domainbed_align.datasets.digits import (CUE_AGREEMENT, PALETTE, Debug28, SpuriousDigits,
                                             _degrade, make_spurious_digits)
from domainbed_align.lib.errors import ConfigError

N_PER_DOMAIN = [450, 449, 449, 449]        # 1,797 scikit-learn digits split in four
LABEL_SUMS = [2113, 1928, 1981, 2048]


@pytest.fixture  # per test (0.1 s): mutmut links a function only to the tests that call it
def domains():
    return make_spurious_digits()


def _cue(x):
    """Class whose palette colour the 4x4 corner patch shows (the patch is one flat colour)."""
    patch = x[:, :, :4, :4]
    assert (patch == patch[:, :, :1, :1]).all()
    dist = ((patch[:, :, 0, 0][:, None, :] - PALETTE[None]) ** 2).sum(-1)
    assert np.allclose(dist.min(1), 0)              # exactly a palette colour
    return dist.argmin(1)


def test_shapes_labels_and_sizes(domains):
    assert [len(d[1]) for d in domains] == N_PER_DOMAIN
    for x, y, gt, train_masks in domains:
        assert x.shape == (len(y), 3, 28, 28) and x.dtype == np.float32
        assert gt.shape == (len(y), 1, 28, 28) and set(np.unique(gt)) == {0.0, 1.0}
        assert gt.dtype == np.float32
        assert train_masks is gt                     # mask_quality "gt"
        assert 0 <= x.min() and x.max() <= 1
        assert set(np.unique(y)) == set(range(10))


def test_cue_agreement_per_domain(domains):
    agree = [int((_cue(x) == y).sum()) for x, y, _, _ in domains]
    assert agree == [413, 362, 328, 46]              # exact for the fixed data seed
    for a, n, p in zip(agree, N_PER_DOMAIN, CUE_AGREEMENT):
        assert abs(a / n - p) < 3 * np.sqrt(p * (1 - p) / n)   # and the rate it is drawn with
    assert CUE_AGREEMENT == (0.9, 0.8, 0.7, 0.1)
    for x, y, _, _ in domains:                       # a disagreeing cue is another class
        cue = _cue(x)
        assert len(set(cue[cue != y].tolist())) > 5


def test_masks_belong_to_their_image(domains):
    for x, y, gt, _ in domains:
        m = gt[:, 0] > 0
        # x = bg * (1 - alpha) + ink * alpha with ink >= 0.85: every stroke pixel is bright
        assert (x.min(1)[m] >= 0.425 - 1e-6).all()
        # the mask of the next image does not fit this one
        other = np.roll(m, 1, axis=0)
        bright = x.min(1) >= 0.425 - 1e-6
        own_fit = (bright & m).sum((1, 2)) / m.sum((1, 2))
        other_fit = (bright & other).sum((1, 2)) / other.sum((1, 2))
        assert (own_fit == 1).all() and other_fit.mean() < 0.7
        # strokes lie in one 16x16 box, never on the cue patch
        assert not gt[:, :, :4, :4].any()
        rows, cols = m.any(2), m.any(1)
        for r, c in zip(rows, cols):
            ri, ci = np.flatnonzero(r), np.flatnonzero(c)
            assert ri[-1] - ri[0] < 16 and ci[-1] - ci[0] < 16


def test_pinned_sums_for_the_fixed_data_seed(domains):
    assert [int(d[2].sum()) for d in domains] == [35041, 35261, 35215, 35144]
    np.testing.assert_allclose([float(d[0].astype(np.float64).sum()) for d in domains],
                               [246116.48595356214, 294468.3025450787, 224253.14122951566,
                                271288.65434624], rtol=1e-6)
    assert [int(d[1].sum()) for d in domains] == LABEL_SUMS


def test_clean_variant_differs_only_in_the_patch(domains):
    clean = make_spurious_digits(spurious=False)
    for (x, y, gt, _), (xc, yc, gtc, _) in zip(domains, clean):
        np.testing.assert_array_equal(y, yc)
        np.testing.assert_array_equal(gt, gtc)
        outside = np.ones((28, 28), dtype=bool)
        outside[:4, :4] = False
        np.testing.assert_array_equal(x[:, :, outside], xc[:, :, outside])
        assert (xc[:, :, :4, :4].max() <= 0.75)      # background, not a palette colour
        assert not np.isclose(xc[:, :, :4, :4], x[:, :, :4, :4]).all()


def _blob_masks():
    gt = np.zeros((3, 1, 28, 28), dtype=np.float32)
    gt[0, 0, 10:14, 10:12] = 1
    gt[1, 0, 2:4, 20:26] = 1
    gt[2, 0, 20, 5] = 1
    return gt


def test_degraded_masks_follow_their_definitions():
    gt = _blob_masks()
    rs = lambda: np.random.RandomState(0)  # noqa: E731
    assert _degrade(gt, "gt", rs()) is gt
    dil = _degrade(gt, "dilated", rs())
    assert dil.shape == gt.shape and (dil >= gt).all()
    assert dil[2, 0].sum() == 49 and dil[2, 0, 17:24, 2:9].all()     # 7x7 square around a pixel
    assert dil[0, 0].sum() == (4 + 6) * (2 + 6)
    shifted = _degrade(gt, "shifted", rs())
    moves = rs().choice([-5, 5], size=(3, 2))
    for i, (dy, dx) in enumerate(moves):
        np.testing.assert_array_equal(shifted[i], np.roll(gt[i], (dy, dx), axis=(1, 2)))
    square = np.zeros((12, 1, 28, 28), dtype=np.float32)
    square[:, 0, 8:20, 8:20] = 1                      # across both halves, both ways
    partial = _degrade(square, "partial", rs())
    sides = rs().randint(4, size=12)
    assert set(sides.tolist()) == {0, 1, 2, 3}
    for i, side in enumerate(sides):
        expected = square[i, 0].copy()                  # the half that is dropped:
        expected[[np.s_[:, :14], np.s_[:, 14:], np.s_[:14, :], np.s_[14:, :]][side]] = 0
        np.testing.assert_array_equal(partial[i, 0], expected)
        assert partial[i].sum() == 72
    random = _degrade(gt, "random", rs())
    np.testing.assert_array_equal(random, gt[rs().permutation(3)])
    with pytest.raises(ConfigError, match="unknown mask_quality 'blurry'; choose one of gt, "
                                          "dilated, shifted, partial, random"):
        _degrade(gt, "blurry", rs())


def test_generator_hands_degraded_masks_for_training_only(domains):
    shifted = make_spurious_digits(mask_quality="shifted")
    for (x, _, gt, _), (xs, _, gts, train) in zip(domains, shifted):
        np.testing.assert_array_equal(x, xs)
        np.testing.assert_array_equal(gt, gts)
        assert not np.array_equal(train, gt)


def test_dataset_normalises_and_keeps_ground_truth_for_evaluation(domains, monkeypatch):
    ds = SpuriousDigits("", [3], {"mask_quality": "dilated"})
    assert (len(ds), ds.num_classes, tuple(ds.input_shape)) == (4, 10, (3, 28, 28))
    # fixed constants (mean 0.25, std 0.2), never statistics of data that holds a test domain
    other = SpuriousDigits("", [0], {"mask_quality": "dilated"})
    for env, other_env, (x, y, gt, _) in zip(ds.datasets, other.datasets, domains):
        np.testing.assert_allclose(env.x.numpy(), (x - 0.25) / 0.2, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(env.x, other_env.x)
        torch.testing.assert_close(env.y, torch.from_numpy(y))
        torch.testing.assert_close(env.eval_masks, torch.from_numpy(gt))
        assert (env.masks >= env.eval_masks).all() and (env.masks > env.eval_masks).any()


def test_background_styles():
    rs = np.random.RandomState(0)
    plain = digits._background("plain", 2, rs)
    assert plain.shape == (2, 3, 28, 28) and (plain == plain[:, :, :1, :1]).all()
    assert plain.max() <= 0.3
    noise = digits._background("noise", 2, np.random.RandomState(0))
    assert 0 <= noise.min() and noise.max() <= 1 and abs(noise.mean() - 0.2) < 0.01
    for style in ("stripes", "gradient"):
        bg = digits._background(style, 2, np.random.RandomState(0))
        assert bg.shape == (2, 3, 28, 28) and 0 <= bg.min() and bg.max() <= 0.35 + 1e-6
        assert bg.std() > 0.01
    with pytest.raises(ValueError):
        digits._background("checkers", 1, rs)
    with pytest.raises(ValueError, match="^checkers$"):
        digits._background("checkers", 1, rs)
    assert SpuriousDigits.environments()[:4] == SpuriousDigits.environments()


def test_debug28_is_fixed_small_random_data():
    a, b = Debug28("", [0], {}), Debug28("", [1], {})
    assert (len(a), a.num_classes, tuple(a.input_shape)) == (3, 2, (3, 28, 28))
    for ea, eb in zip(a.datasets, b.datasets):
        torch.testing.assert_close(ea.x, eb.x)                  # the same data every time
        assert ea.x.shape == (48, 3, 28, 28) and ea.masks.shape == (48, 1, 28, 28)
        assert set(ea.y.tolist()) == {0, 1}
    assert [int(e.y.sum()) for e in a.datasets] == [23, 30, 30]
    assert [int(e.masks.sum()) for e in a.datasets] == [11304, 11284, 11335]   # ~30% of pixels
    np.testing.assert_allclose([float(e.x.sum()) for e in a.datasets],
                               [-205.7453, -492.6782, -260.7108], atol=1e-3)


def test_spurious_digits_reads_its_hparams():
    clean = SpuriousDigits("", [3], {"digits_spurious": False})
    default = SpuriousDigits("", [3], {})
    for c, d in zip(clean.datasets, default.datasets):
        assert not torch.equal(c.x[:, :, :4, :4], d.x[:, :, :4, :4])
        torch.testing.assert_close(d.masks, d.eval_masks)       # default mask_quality: gt
    assert all(e.masks.dtype == torch.float32 for e in default.datasets)
    # the cue region the density metrics read: none on the clean variant, the 16 patch pixels
    assert clean.cue_region is None
    assert default.cue_region.dtype == bool and default.cue_region.sum() == 16
    assert default.cue_region[:4, :4].all()


def test_cue_region_is_a_boolean_pixel_set():
    patch, background = digits.cue_region("patch"), digits.cue_region("background")
    assert patch.dtype == bool and background.dtype == bool     # used as masks (~, &)
    assert patch.shape == background.shape == (28, 28)
    assert patch.sum() == 16 and patch[:4, :4].all() and background.all()


def test_background_grid_is_float32_for_pinned_bytes():
    """The stripes / gradient coordinates are the float32 grid k / 28: part of what makes the
    generated data the same on every machine. Pinned to 1e-12 (float64 libm differences are
    ~1e-16; a float64 grid moves these sums by ~1e-9 relative)."""
    pinned = {"stripes": 665.8140658992988, "gradient": 1057.5267789768027}
    for style, total in pinned.items():
        bg = digits._background(style, 2, np.random.RandomState(0))
        assert float(bg.sum()) == pytest.approx(total, rel=1e-12, abs=0), style


def _tint_cue(x_background_cue, x_clean):
    """Class whose colour tints the background: at pixel (0, 0), never under a digit,
    x = 0.5 * background + 0.35 * colour, and the clean variant holds the same background."""
    tint = (x_background_cue[:, :, 0, 0] - 0.5 * x_clean[:, :, 0, 0]) / 0.35
    dist = ((tint[:, None, :] - PALETTE[None]) ** 2).sum(-1)
    assert np.allclose(dist.min(1), 0, atol=1e-10)
    return dist.argmin(1)


def test_cue_agreements_follow_their_definition():
    assert digits.cue_agreements(0.8) == CUE_AGREEMENT       # the default is the original table
    assert digits.cue_agreements(0.5) == (0.6, 0.5, 0.4, 0.1)
    assert digits.cue_agreements(0.95) == (1.0, 0.95, 0.85, 0.1)  # clipped to a probability
    assert digits.cue_agreements(0.05) == (0.15, 0.05, 0.0, 0.1)
    assert digits.cue_agreements(0.0) == (0.1, 0.0, 0.0, 0.1)     # both ends are valid
    assert digits.cue_agreements(1.0) == (1.0, 1.0, 0.9, 0.1)
    with pytest.raises(ConfigError, match=r"cue_agreement must be in \[0, 1\], got 1.5"):
        digits.cue_agreements(1.5)
    with pytest.raises(ConfigError, match="unknown digits_cue 'stamp'; choose one of patch, background"):
        make_spurious_digits(cue="stamp")


def test_background_cue_tints_only_the_background(domains):
    clean = make_spurious_digits(spurious=False)
    tinted = make_spurious_digits(cue="background")
    for (x, y, gt, _), (xc, _, _, _), (xb, yb, gtb, _) in zip(domains, clean, tinted):
        np.testing.assert_array_equal(y, yb)
        np.testing.assert_array_equal(gt, gtb)
        # the same cue colour as the patch variant, drawn from the same stream
        np.testing.assert_array_equal(_tint_cue(xb, xc), _cue(x))
        strokes = gt[:, 0] > 0.5
        # ink covers the tint: on strokes (alpha > 0.5) the background weighs below a half,
        # and |0.5 bg + 0.35 colour - bg| <= 0.35
        on = np.broadcast_to(strokes[:, None], xc.shape)
        assert np.abs(xb - xc)[on].max() <= 0.5 * 0.35 + 1e-6
        assert np.abs(xb - xc)[~on].max() > 0.3
        corner = 0.5 * xc[:, :, :4, :4] + 0.35 * PALETTE[_cue(x)][:, :, None, None]
        np.testing.assert_allclose(xb[:, :, :4, :4], corner, atol=1e-6)  # never under a digit
        assert not np.isclose(xb[:, :, :4, :4], x[:, :, :4, :4]).all()  # no patch


def test_cue_agreement_sets_the_training_domains_rates():
    weak = make_spurious_digits(agreement=0.5)
    agree = [int((_cue(x) == y).sum()) for x, y, _, _ in weak]
    for a, n, p in zip(agree, N_PER_DOMAIN, (0.6, 0.5, 0.4, 0.1)):
        assert abs(a / n - p) < 3 * np.sqrt(p * (1 - p) / n)
    assert agree[3] == 46                                   # domain 3 untouched: as the default
    ds = SpuriousDigits("", [3], {"cue_agreement": 0.5, "digits_cue": "background"})
    assert ds.cue == "background"
    np.testing.assert_allclose(ds.datasets[0].x.numpy(), (make_spurious_digits(
        cue="background", agreement=0.5)[0][0] - 0.25) / 0.2, rtol=1e-5, atol=1e-5)
