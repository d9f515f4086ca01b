"""SpuriousDigits, the built-in benchmark with ground-truth masks, and the tiny Debug28.

SpuriousDigits is made from the real handwritten digits shipped with scikit-learn (1,797 8x8
images): each digit is upscaled to 16x16 and pasted at a random place on a 28x28 RGB canvas
whose background style names the domain; domains use disjoint digits. A colour cue takes the
colour of the label with probability 0.9 / 0.8 / 0.7 in the first three domains and 0.1 in the
last (otherwise another class's colour, uniformly: in domain 3 the cue is independent of the
label), so a model that reads the cue fails on domain 3. The ground-truth relevance mask is the
digit's strokes. Everything is generated from a fixed data seed: every run of a sweep sees the
same images.

Two knobs make the study of issue 10 possible (both hparams, defaults = the original benchmark):
- `digits_cue`: `patch` (a 4x4 corner patch, a compact shortcut filling one Grad-CAM cell) or
  `background` (the whole background is tinted with the cue colour: a diffuse shortcut, like
  the scene context of VLCS and TerraIncognita).
- `cue_agreement` a: the training-domain agreements are (a + 0.1, a, a - 0.1), clipped to
  [0, 1]; domain 3 stays at 0.1. a = 0.8 is the original table.
"""
import numpy as np
import torch
import torch.nn.functional as F

from domainbed_align.datasets.registry import register_dataset
from domainbed_align.datasets.base import MultipleDomainDataset, TensorDomain
from domainbed_align.lib.errors import ConfigError
from domainbed_align.lib.misc import seed_hash

DATA_SEED = 0
CANVAS = 28
DIGIT_PX = 16
PATCH_PX = 4
CUE_AGREEMENT = (0.9, 0.8, 0.7, 0.1)  # P(cue colour == label colour) per domain, the default
CUES = ("patch", "background")
BACKGROUND_KEEP, BACKGROUND_TINT = 0.5, 0.35  # tinted background: below the ink's 0.85
# gt and its degradations; the controls: none (no pixel relevant: a method's no-annotation
# limit), cue (the shortcut region marked relevant with the strokes), inverted (complement),
# all_but_cue (everything relevant but the shortcut region: a penalty on the cue alone)
MASK_QUALITIES = ("gt", "dilated", "shifted", "partial", "random", "none", "cue", "inverted",
                  "all_but_cue")
# Normalisation constants, fixed by the generator's design (backgrounds in [0, 0.35], ink in
# [0.85, 1]) and the same whatever the test domain: statistics of the data would include it.
# 0 after normalising is this grey, the default fill of removed pixels.
PIXEL_MEAN, PIXEL_STD = 0.25, 0.2
# Ten well-separated colours (matplotlib tab10), one per class.
PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40],
                    [148, 103, 189], [140, 86, 75], [227, 119, 194], [127, 127, 127],
                    [188, 189, 34], [23, 190, 207]], dtype=np.float32) / 255.0


def _background(style: str, n: int, rs: np.random.RandomState) -> np.ndarray:
    """(n, 3, 28, 28) backgrounds in [0, 1]; the style is what distinguishes the domains."""
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32) / CANVAS
    if style == "plain":
        colour = rs.uniform(0.0, 0.3, (n, 3, 1, 1))
        return np.broadcast_to(colour, (n, 3, CANVAS, CANVAS)).copy()
    if style == "noise":
        return np.clip(rs.normal(0.2, 0.1, (n, 3, CANVAS, CANVAS)), 0, 1)
    if style == "stripes":
        theta = rs.uniform(0, np.pi, (n, 1, 1))
        freq = rs.uniform(2.5, 5.0, (n, 1, 1))
        phase = rs.uniform(0, 2 * np.pi, (n, 1, 1))
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
        tint = rs.uniform(0.15, 0.35, (n, 3, 1, 1))
        return tint * wave[:, None]
    if style == "gradient":
        theta = rs.uniform(0, 2 * np.pi, (n, 1, 1))
        ramp = (xx - 0.5) * np.cos(theta) + (yy - 0.5) * np.sin(theta)
        ramp = (ramp - ramp.min(axis=(1, 2), keepdims=True)) / np.ptp(ramp, axis=(1, 2), keepdims=True)
        a, b = rs.uniform(0, 0.35, (n, 3, 1, 1)), rs.uniform(0, 0.35, (n, 3, 1, 1))
        return a + (b - a) * ramp[:, None]
    raise ValueError(style)


def _degrade(gt: np.ndarray, quality: str, rs: np.random.RandomState,
             cue: str = "patch") -> np.ndarray:
    """Masks handed to mask-based methods; `gt` (n, 1, 28, 28) binary."""
    if quality == "gt":
        return gt
    if quality == "none":
        return np.zeros_like(gt)
    if quality == "cue":
        return np.maximum(gt, cue_region(cue)[None, None].astype(gt.dtype))
    if quality == "inverted":
        return 1.0 - gt
    if quality == "all_but_cue":
        return np.broadcast_to(1.0 - cue_region(cue)[None, None], gt.shape).astype(gt.dtype)
    t = torch.from_numpy(gt)
    if quality == "dilated":  # over-covering blob around the strokes
        return F.max_pool2d(t, 7, stride=1, padding=3).numpy()
    if quality == "shifted":  # right shape, wrong place
        out = np.empty_like(gt)
        for i, (dy, dx) in enumerate(rs.choice([-5, 5], size=(len(gt), 2))):
            out[i] = np.roll(gt[i], (dy, dx), axis=(1, 2))
        return out
    if quality == "partial":  # only one half of the strokes
        out = gt.copy()
        half = CANVAS // 2
        for i, side in enumerate(rs.randint(4, size=len(gt))):
            region = [(slice(None), slice(None, half)), (slice(None), slice(half, None)),
                      (slice(None, half), slice(None)), (slice(half, None), slice(None))][side]
            out[i, 0][region] = 0
        return out
    if quality == "random":  # another image's strokes: plausible shape, unrelated to x
        return gt[rs.permutation(len(gt))]
    raise ConfigError(f"unknown mask_quality {quality!r}; choose one of {', '.join(MASK_QUALITIES)}")


def cue_agreements(agreement: float) -> tuple:
    """Per-domain P(cue == label): training domains around `agreement`, domain 3 at chance."""
    if not 0.0 <= agreement <= 1.0:
        raise ConfigError(f"cue_agreement must be in [0, 1], got {agreement}")
    a = [min(1.0, max(0.0, round(agreement + d, 10))) for d in (0.1, 0.0, -0.1)]
    return (*a, CUE_AGREEMENT[3])


def cue_region(cue: str, shape=(CANVAS, CANVAS)) -> np.ndarray:
    """(H, W) bool: where the cue lives (strokes excluded by the caller for `background`)."""
    if cue == "patch":
        region = np.zeros(shape, dtype=bool)
        region[:PATCH_PX, :PATCH_PX] = True
        return region
    if cue == "background":
        return np.ones(shape, dtype=bool)
    raise ConfigError(f"unknown digits_cue {cue!r}; choose one of {', '.join(CUES)}")


def make_spurious_digits(spurious: bool = True, mask_quality: str = "gt", cue: str = "patch",
                         agreement: float = CUE_AGREEMENT[1]):
    """Per domain: (x (n,3,28,28) in [0,1], y (n,), gt masks, training masks)."""
    cue_region(cue)  # checks the name before any work
    agreements = cue_agreements(agreement)
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8)
    images = F.interpolate(images, size=(DIGIT_PX, DIGIT_PX), mode="bilinear",
                           align_corners=False).clamp(0, 1).numpy()
    labels = digits.target.astype(np.int64)
    order = np.random.RandomState(DATA_SEED).permutation(len(labels))
    styles = SpuriousDigits.environments()
    domains = []
    for d, idx in enumerate(np.array_split(order, len(styles))):
        rs = np.random.RandomState(seed_hash(DATA_SEED, "SpuriousDigits", d))
        n = len(idx)
        x = _background(styles[d], n, rs).astype(np.float32)
        alpha = np.zeros((n, 1, CANVAS, CANVAS), dtype=np.float32)
        rows, cols = rs.randint(0, CANVAS - DIGIT_PX + 1, size=(2, n))
        cols = np.where((rows < PATCH_PX) & (cols < PATCH_PX), cols + PATCH_PX, cols)  # off the patch
        for i in range(n):
            alpha[i, 0, rows[i]:rows[i] + DIGIT_PX, cols[i]:cols[i] + DIGIT_PX] = images[idx[i], 0]
        ink = rs.uniform(0.85, 1.0, (n, 3, 1, 1)).astype(np.float32)
        y = labels[idx]
        if spurious:
            agree = rs.uniform(size=n) < agreements[d]
            other = (y + rs.randint(1, 10, size=n)) % 10  # a different class, uniformly
            colour = PALETTE[np.where(agree, y, other)][:, :, None, None]
            if cue == "background":  # tinted before the strokes, which cover it
                x = BACKGROUND_KEEP * x + BACKGROUND_TINT * colour
        x = (x * (1 - alpha) + ink * alpha).astype(np.float32)
        if spurious and cue == "patch":
            x[:, :, :PATCH_PX, :PATCH_PX] = colour[:, :, 0, 0][:, :, None, None]
        gt = (alpha > 0.5).astype(np.float32)
        domains.append((x, y, gt, _degrade(gt, mask_quality, rs, cue)))
    return domains


@register_dataset
class SpuriousDigits(MultipleDomainDataset):
    """Built-in benchmark: real digits, background-style domains, a spurious colour cue."""

    N_STEPS = 5001
    # Like DomainBed's image datasets: 17 records a run. Every record explains 256 images per
    # split; at 100 steps that would cost a third of a 300-step ERM run's time, at 300 a sixth.
    CHECKPOINT_FREQ = 300
    N_WORKERS = 0
    INPUT_SHAPE = (3, 28, 28)
    HAS_MASKS = True

    def __init__(self, root, test_envs, hparams):
        super().__init__()
        self.cue = hparams.get("digits_cue", "patch")
        # where the shortcut lives, for the cue/strokes/background mass densities of evaluation
        self.cue_region = cue_region(self.cue) if hparams.get("digits_spurious", True) else None
        domains = make_spurious_digits(hparams.get("digits_spurious", True),
                                       hparams.get("mask_quality", "gt"), self.cue,
                                       hparams.get("cue_agreement", CUE_AGREEMENT[1]))
        for x, y, gt, train_masks in domains:
            xn = torch.from_numpy((x - PIXEL_MEAN) / PIXEL_STD)
            self.datasets.append(TensorDomain(xn, torch.from_numpy(y), torch.from_numpy(train_masks),
                                              torch.from_numpy(gt)))
        self.num_classes = 10
        self.input_shape = self.INPUT_SHAPE


@register_dataset
class Debug28(MultipleDomainDataset):
    """Tiny random 28x28 data with random masks, for fast tests (DomainBed's Debug28)."""

    N_STEPS = 5
    CHECKPOINT_FREQ = 2
    N_WORKERS = 0
    INPUT_SHAPE = (3, 28, 28)
    HAS_MASKS = True
    N_PER_DOMAIN = 48

    def __init__(self, root, test_envs, hparams):
        super().__init__()
        g = torch.Generator().manual_seed(DATA_SEED)
        for _ in self.environments():
            x = torch.randn(self.N_PER_DOMAIN, *self.INPUT_SHAPE, generator=g)
            y = torch.randint(0, 2, (self.N_PER_DOMAIN,), generator=g)
            m = (torch.rand(self.N_PER_DOMAIN, 1, 28, 28, generator=g) < 0.3).float()
            self.datasets.append(TensorDomain(x, y, m))
        self.num_classes = 2
        self.input_shape = self.INPUT_SHAPE
