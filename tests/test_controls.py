"""Issue 18's controls, pinned on hand-checkable cases: RES's and GRADIA's targets rescaled to
peak 1 (their reference code), ALIGN's l1 alignment loss, and the control mask qualities."""
import numpy as np
import pytest
import torch

from domainbed_align.algorithms.gradia import gradia_term
from domainbed_align.algorithms.guidance import peak_one
from domainbed_align.algorithms.res import res_terms
from domainbed_align.datasets import digits


def _half_cell_mask():
    """(1, 1, 4, 4): two of the four pixels of Grad-CAM cell (0, 0) relevant -> pooled 0.5."""
    m = torch.zeros(1, 1, 4, 4)
    m[0, 0, 0, 0:2] = 1
    return m


def test_peak_one_divides_each_map_by_its_own_maximum():
    maps = torch.tensor([[[0.5, 0.25], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = peak_one(maps)
    assert out[0].tolist() == [[1.0, 0.5], [0.0, 0.0]]
    assert out[1].tolist() == [[0.0, 0.0], [0.0, 0.0]]   # an empty map stays empty


def test_gradia_target_rescaled_to_peak_one():
    g = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    m = _half_cell_mask()
    assert gradia_term(g, m).item() == pytest.approx(0.5 / 4)          # |1 - 0.5| on one cell
    assert gradia_term(g, m, rescale=True).item() == pytest.approx(0.0)  # target (1, 0, 0, 0)


def test_res_target_rescaled_to_peak_one():
    g = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    hp = {"res_blur_sigma": 0.0, "res_tanh_scale": 5.0, "res_n_thresholds": 3,
          "res_target_rescale": False}
    assert res_terms(g, _half_cell_mask(), hp)[0].item() == pytest.approx(0.5 / 4)
    hp["res_target_rescale"] = True
    assert res_terms(g, _half_cell_mask(), hp)[0].item() == pytest.approx(0.0)
    # with a blur the rescaled target still peaks at exactly 1
    hp["res_blur_sigma"] = 1.0
    l1 = res_terms(torch.zeros(1, 2, 2), _half_cell_mask(), hp)[0].item()
    assert l1 > 0


def test_align_l1_loss_is_the_mean_absolute_difference():
    from domainbed_align import hparams_registry
    from domainbed_align.algorithms import get_algorithm_class
    hp = hparams_registry.default_hparams("ALIGN", "SpuriousDigits")
    hp.update(align_loss="l1", align_target_pool="avg")
    alg = get_algorithm_class("ALIGN")((3, 28, 28), 10, 3, hp)
    x = torch.rand(2, 3, 28, 28)
    cam = torch.rand(2, 7, 7)
    with torch.no_grad():
        target = torch.nn.functional.adaptive_avg_pool2d(alg.masker.eval()(x), (7, 7))[:, 0]
    from domainbed_align.explain.gradcam import normalize_cam
    g = normalize_cam(cam, rel_eps=hp["cam_rel_eps"])
    assert alg.alignment_loss(x, cam).item() == pytest.approx((g - target).abs().mean().item(),
                                                              rel=1e-5)
    hp["align_loss"] = "bce"
    bce = torch.nn.functional.binary_cross_entropy(g.clamp(1e-6, 1 - 1e-6), target)
    assert alg.alignment_loss(x, cam).item() == pytest.approx(bce.item(), rel=1e-5)


def test_control_mask_qualities():
    gt = np.zeros((2, 1, 28, 28), dtype=np.float32)
    gt[:, 0, 10:14, 10:20] = 1
    rs = np.random.RandomState(0)
    assert digits._degrade(gt, "none", rs).sum() == 0
    inv = digits._degrade(gt, "inverted", rs)
    assert np.array_equal(inv, 1 - gt)
    cue = digits._degrade(gt, "cue", rs, "patch")
    assert cue[:, 0, :4, :4].min() == 1 and cue.sum() == gt.sum() + 2 * 16   # strokes + 4x4 patch
    assert np.array_equal(cue * (1 - digits.cue_region("patch")[None, None]), gt)
    assert digits._degrade(gt, "cue", rs, "background").min() == 1        # diffuse cue: all of it
    abc = digits._degrade(gt, "all_but_cue", rs, "patch")
    assert abc.shape == gt.shape and abc.sum() == 2 * (28 * 28 - 16) and abc[:, 0, :4, :4].max() == 0


def test_control_masks_reach_the_dataset():
    ds = digits.SpuriousDigits("", [3], {"mask_quality": "inverted", "digits_cue": "patch"})
    env = ds.datasets[0]
    _, _, m = env[0]
    gt = env.eval_masks[0]          # the ground truth, which the metrics always use
    assert torch.equal(torch.as_tensor(m).float(), 1 - torch.as_tensor(gt).float())


def test_penalise_empty_masks_weights_empty_masks_only():
    from domainbed_align.algorithms.input_gradient import penalty_weight
    m = torch.zeros(3, 1, 2, 2)
    m[0, 0, 0, 0] = 1          # partial: guided either way
    m[2] = 1                   # full: nothing outside, weight 0 either way
    assert penalty_weight(m, {}).tolist() == [1.0, 0.0, 0.0]
    assert penalty_weight(m, {"penalise_empty_masks": False}).tolist() == [1.0, 0.0, 0.0]
    assert penalty_weight(m, {"penalise_empty_masks": True}).tolist() == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("name,power", [("GradMask", 1), ("RRR", 2)])
def test_penalise_empty_masks_is_the_penalty_on_every_pixel(name, power):
    """With empty masks the control's term is the mean of |g|^power over all input features
    (g the method's own input gradient); without the control the term is exactly 0."""
    from domainbed_align import hparams_registry
    from domainbed_align.algorithms import get_algorithm_class
    from domainbed_align.algorithms.guidance import input_gradient
    torch.manual_seed(0)
    hp = hparams_registry.default_hparams(name, "SpuriousDigits")
    assert hp["penalise_empty_masks"] is False
    alg = get_algorithm_class(name)((3, 28, 28), 10, 3, hp)
    x, y, m = torch.rand(4, 3, 28, 28), torch.tensor([0, 1, 2, 3]), torch.zeros(4, 1, 28, 28)
    key = name.lower()
    assert alg.losses(x, y, m)[key].item() == 0.0
    if name == "RRR":
        score = lambda z: torch.nn.functional.log_softmax(z, dim=1).sum(dim=1)
    else:
        score = lambda z: z.gather(1, y.view(-1, 1))[:, 0]
    g, _ = input_gradient(alg.network, x, score, create_graph=False)
    alg.hparams["penalise_empty_masks"] = True
    assert alg.losses(x, y, m)[key].item() == pytest.approx(g.abs().pow(power).mean().item(),
                                                            rel=1e-5)
