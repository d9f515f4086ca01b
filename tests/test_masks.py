"""The masks command on a tiny fabricated VLCS folder of real PNG and JPEG files."""
import json
import os
import sys
import types

import numpy as np
import pytest
import torch

from domainbed_align.datasets import masks as masks_cli
from domainbed_align.datasets.image_folder import VLCS

DOMAINS = VLCS.DOMAIN_DIRS
CLASSES = ("bird", "car")
SQUARE = (slice(8, 24), slice(12, 32))  # the object: rows 8..23, cols 12..31 of a 32x44 image


def _image(seed):
    """A red square on a noisy green-grey background (32x44): GrabCut can find it."""
    rs = np.random.RandomState(seed)
    im = np.clip(rs.normal([90, 120, 90], 12, (32, 44, 3)), 0, 255)
    im[SQUARE] = np.clip(rs.normal([220, 30, 30], 10, (16, 20, 3)), 0, 255)
    return im.astype(np.uint8)


@pytest.fixture
def vlcs(tmp_path):
    from PIL import Image
    root = tmp_path / "data"
    n = 0
    for d in DOMAINS:
        for c in CLASSES:
            folder = root / "VLCS" / d / c
            folder.mkdir(parents=True)
            for k, ext in enumerate((".png", ".jpg")):
                Image.fromarray(_image(n)).save(folder / f"img{k}{ext}", quality=95)
                n += 1
    return root


def _run(vlcs, out, *extra, capsys=None):
    rc = masks_cli.main(["--dataset", "VLCS", "--data_dir", str(vlcs), "--out", str(out), *extra])
    return rc


def _all_masks(out):
    return sorted(os.path.relpath(os.path.join(dp, f), out) for dp, _, fs in os.walk(out) for f in fs)


def test_centre_prior_writes_the_layout_mask_dir_reads(vlcs, tmp_path, capsys):
    out = tmp_path / "masks"
    assert _run(vlcs, out, "--method", "centre") == 0
    expected = sorted(os.path.join(d, c, f"img{k}.png") for d in DOMAINS for c in CLASSES for k in (0, 1))
    assert _all_masks(out) == expected  # no temp files left behind either
    m = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / "SUN09" / "car" / "img1.png"))
    assert m.shape == (32, 44) and m.dtype == np.uint8
    assert m[15:17, 21:23].min() >= 250 and m[0, 0] < 30  # high in the centre, low in a corner
    printed = capsys.readouterr().out
    assert "Caltech101" in printed and "area mean" in printed and "--mask_dir" in printed
    ds = VLCS(str(vlcs), [0], {"data_augmentation": True}, mask_dir=str(out))
    x, y, mask = ds[2][0]
    assert x.shape == (3, 224, 224) and mask.shape == (1, 224, 224) and 0 <= mask.min() <= mask.max() <= 1


def test_resumes_without_rewriting(vlcs, tmp_path, capsys):
    out = tmp_path / "masks"
    assert _run(vlcs, out, "--method", "centre") == 0
    keep = out / "VOC2007" / "bird" / "img0.png"
    os.utime(keep, (1, 1))
    gone = out / "LabelMe" / "car" / "img1.png"
    gone.unlink()
    capsys.readouterr()
    assert _run(vlcs, out, "--method", "centre") == 0
    table = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:3] for line in table[1:5]}
    assert rows["LabelMe"] == ["1", "3"] and rows["VOC2007"] == ["0", "4"]  # written, skipped
    assert os.stat(keep).st_mtime == 1 and gone.exists()


def test_grabcut_finds_the_object(vlcs, tmp_path):
    pytest.importorskip("cv2")
    out = tmp_path / "masks"
    assert _run(vlcs, out, "--method", "grabcut") == 0
    from PIL import Image
    truth = np.zeros((32, 44), bool)
    truth[SQUARE] = True
    m = np.asarray(Image.open(out / "Caltech101" / "bird" / "img0.png")) >= 128
    iou = (m & truth).sum() / (m | truth).sum()
    assert iou > 0.8, iou


def test_grabcut_falls_back_to_its_rectangle_on_a_flat_image():
    pytest.importorskip("cv2")
    gen = masks_cli.GrabCut(margin=0.25)
    m = gen([np.full((20, 40, 3), 128, np.uint8)], [0])[0]
    assert gen.fallbacks == 1 and m.shape == (20, 40)
    assert (m[5:15, 10:30] == 255).all() and m.sum() == 255 * 10 * 20


def test_sam_without_the_package_is_one_line(vlcs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # import fails
    assert _run(vlcs, tmp_path / "m", "--method", "sam", "--sam_checkpoint", "x.pth") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --method sam needs the optional package segment-anything")


def test_sam_picks_the_best_mask_below_max_area(monkeypatch, tmp_path):
    """A stand-in `segment_anything` exercises our prompt and choice of SAM's three masks."""
    calls = {}

    class Predictor:
        def __init__(self, sam):
            calls["sam"] = sam

        def set_image(self, im):
            calls["image"] = im.shape

        def predict(self, point_coords, point_labels, multimask_output):
            calls["point"] = point_coords.tolist()
            h, w = calls["image"][:2]
            full, half, small = np.ones((h, w), bool), np.zeros((h, w), bool), np.zeros((h, w), bool)
            half[:, : w // 2] = True
            small[:2, :2] = True
            return np.stack([full, half, small]), np.array([0.99, 0.9, 0.5]), None

    class Sam:
        def to(self, device):
            return self
    fake = types.SimpleNamespace(SamPredictor=Predictor, sam_model_registry={"vit_b": lambda checkpoint: Sam()})
    monkeypatch.setitem(sys.modules, "segment_anything", fake)
    ckpt = tmp_path / "sam.pth"
    ckpt.write_bytes(b"x")
    gen = masks_cli.SamCentrePoint(str(ckpt), "vit_b", device="cpu")
    m = gen([np.zeros((10, 20, 3), np.uint8)], [0])[0]
    assert calls["point"] == [[10.0, 5.0]]
    assert m.dtype == np.uint8 and (m[:, :10] == 255).all() and (m[:, 10:] == 0).all()  # not the full one
    with pytest.raises(masks_cli.ConfigError, match="--sam_checkpoint"):
        masks_cli.SamCentrePoint(str(tmp_path / "missing.pth"), "vit_b")


def test_bad_input_is_one_line(vlcs, tmp_path, capsys):
    assert _run(tmp_path / "nowhere", tmp_path / "m", "--method", "centre") == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert masks_cli.main(["--dataset", "SpuriousDigits", "--data_dir", str(vlcs), "--out", str(tmp_path / "m"),
                           "--method", "centre"]) == 2
    assert "not an image-folder dataset" in capsys.readouterr().err
    assert _run(vlcs, tmp_path / "m", "--method", "gradcam") == 2
    assert "--run_dir" in capsys.readouterr().err


def test_require_masks_names_the_command():
    from domainbed_align.algorithms import get_algorithm_class
    from domainbed_align.datasets import get_dataset_class
    with pytest.raises(masks_cli.ConfigError) as e:
        masks_cli.require_masks(get_algorithm_class("GRADIA"), VLCS, None)
    assert "python -m domainbed_align.datasets.masks --dataset VLCS" in str(e.value)
    assert "\n" not in str(e.value)
    masks_cli.require_masks(get_algorithm_class("GRADIA"), VLCS, "some/dir")
    masks_cli.require_masks(get_algorithm_class("ERM"), VLCS, None)
    masks_cli.require_masks(get_algorithm_class("GRADIA"), get_dataset_class("SpuriousDigits"), None)


def _fake_run(tmp_path, num_classes=2):
    """A finished-run folder holding a random-init ResNet-18 ERM in the trainer's model.pkl format."""
    from domainbed_align import hparams_registry
    from domainbed_align.algorithms import get_algorithm_class
    hp = hparams_registry.default_hparams("ERM", "VLCS")
    hp.update(pretrained=False, resnet18=True)
    torch.manual_seed(0)
    alg = get_algorithm_class("ERM")((3, 224, 224), num_classes, 3, hp)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"args": {"dataset": "VLCS", "algorithm": "ERM", "test_envs": [0]},
                "model_input_shape": (3, 224, 224), "model_num_classes": num_classes,
                "model_num_domains": 3, "model_hparams": hp, "model_dict": alg.state_dict()},
               run / "model.pkl")
    return run, alg


def test_gradcam_of_a_run_is_its_thresholded_true_class_cam(vlcs, tmp_path):
    from domainbed_align.datasets.image_folder import _transforms
    from domainbed_align.explain.gradcam import grad_cam, normalize_cam, upsample_cam
    run, alg = _fake_run(tmp_path)
    gen = masks_cli.RunGradCam(str(run), "VLCS", threshold=0.5, device="cpu")
    ims = [_image(0), _image(1)[:30, :40]]
    got = gen(ims, [1, 0])
    alg.eval()
    for im, label, m in zip(ims, [1, 0], got):
        from torchvision import tv_tensors
        x = _transforms(224, False)(tv_tensors.Image(torch.from_numpy(im).permute(2, 0, 1)))[None]
        cam, _ = grad_cam(alg.network, alg.cam_layer, x, torch.tensor([label]), relu=True)
        want = normalize_cam(upsample_cam(cam.detach(), im.shape[:2]))[0] >= 0.5
        assert m.shape == im.shape[:2] and np.array_equal(m == 255, want.numpy())
    assert 0 < np.mean(got[0] == 255) < 1
    with pytest.raises(masks_cli.ConfigError, match="trained on VLCS, not TerraIncognita"):
        masks_cli.RunGradCam(str(run), "TerraIncognita")


@pytest.mark.slow
def test_mask_based_training_on_an_image_folder_needs_and_uses_the_mask_folder(vlcs, tmp_path):
    from conftest import run_module
    hp = '{"pretrained": false, "resnet18": true, "batch_size": 2, "explain_n": 0}'
    args = ["--dataset", "VLCS", "--data_dir", vlcs, "--algorithm", "GRADIA", "--test_envs", "0",
            "--steps", "2", "--skip_model_save", "--holdout_fraction", "0.5", "--hparams", hp]
    proc = run_module("domainbed_align.train", *args, "--output_dir", tmp_path / "no_masks", check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("error: GRADIA") and "--mask_dir" in err[0]
    assert not (tmp_path / "no_masks" / "results.jsonl").exists()
    masks = tmp_path / "masks"
    run_module("domainbed_align.datasets.masks", "--dataset", "VLCS", "--data_dir", vlcs, "--out", masks,
               "--method", "centre")
    run_module("domainbed_align.train", *args, "--mask_dir", masks, "--output_dir", tmp_path / "run")
    record = [json.loads(line) for line in open(tmp_path / "run" / "results.jsonl")][-1]
    assert record["step"] == 1 and {"ce", "attention", "loss"} <= set(record)
