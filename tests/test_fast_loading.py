"""The data pipeline's speed levers: `prepare --resize` copies, loader workers from the cores."""
import json
import os

import numpy as np
import pytest

from domainbed_align.datasets import loaders, prepare
from domainbed_align.datasets.image_folder import DomainIndex, ImageFolderDomain
from domainbed_align.datasets.resize import resize_dataset, resize_image, resized_size
from domainbed_align.lib.errors import DataError


def _jpeg(path, size, seed=0):
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3)).astype(np.uint8)).save(path, quality=90)


def test_resized_size_keeps_the_aspect_and_never_enlarges():
    assert resized_size(2048, 1536, 256) == (341, 256)   # 2048 * 256 / 1536 = 341.3
    assert resized_size(747, 1024, 256) == (256, 351)    # portrait: the width is the shorter side
    assert resized_size(227, 227, 256) == (227, 227)     # VLCS-sized: left alone
    assert resized_size(300, 256, 256) == (300, 256)     # exactly N: left alone
    assert resized_size(400, 200, 256) == (400, 200)     # wide, short: never enlarged


def test_resize_image_writes_smaller_files_and_copies_small_ones(tmp_path):
    from PIL import Image
    big, small = str(tmp_path / "big.jpg"), str(tmp_path / "small.jpg")
    _jpeg(big, (640, 480))
    _jpeg(small, (200, 150))
    assert resize_image(big, str(tmp_path / "out" / "big.jpg"), 256)
    with Image.open(tmp_path / "out" / "big.jpg") as im:
        assert im.size == (341, 256)
    assert not resize_image(small, str(tmp_path / "out" / "small.jpg"), 256)
    assert (tmp_path / "out" / "small.jpg").read_bytes() == (tmp_path / "small.jpg").read_bytes()


def test_resized_image_is_the_same_picture_for_the_loader(tmp_path):
    """Evaluation view (Resize to 224x224) of the original and of the 256-px copy agree to
    within JPEG re-encoding and resampling noise: a mean absolute difference of a few
    hundredths in normalised units (the images' own spread is ~1)."""
    from PIL import Image
    rng = np.random.RandomState(0)
    coarse = rng.randint(0, 256, (12, 16, 3)).astype(np.uint8)  # smooth, photo-like
    src = tmp_path / "a.jpg"
    Image.fromarray(coarse).resize((1024, 768), Image.Resampling.BICUBIC).save(src, quality=95)
    resize_image(str(src), str(tmp_path / "r.jpg"), 256)

    def one(name):   # a one-image domain: <tmp_path>/<name> as class "."
        return DomainIndex(str(tmp_path), ["."], np.array([name.encode()]), np.zeros(1, np.int64))
    a = ImageFolderDomain(one("a.jpg"), 224, augment=False)[0][0]
    b = ImageFolderDomain(one("r.jpg"), 224, augment=False)[0][0]
    assert a.shape == b.shape == (3, 224, 224)
    assert (a - b).abs().mean() < 0.05 < a.std()


def _prepared(root, n=2):
    base = root / "terra_incognita"
    for d in ("location_100", "location_38", "location_43", "location_46"):
        for i in range(n):
            _jpeg(str(base / d / "bobcat" / f"{i}.jpg"), (400, 300), seed=i)
    (base / ".prepare.json").write_text(json.dumps({"dataset": "TerraIncognita", "total": 4 * n}))
    return base


def test_resize_dataset_builds_a_copy_with_its_manifest(tmp_path):
    from PIL import Image
    _prepared(tmp_path / "full")
    out = resize_dataset("TerraIncognita", str(tmp_path / "full"), str(tmp_path / "small"), 256, workers=1)
    files = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    assert files == [".prepare.json"] + [f"location_{loc}/bobcat/{i}.jpg"
                                         for loc in ("100", "38", "43", "46") for i in range(2)]
    with Image.open(os.path.join(out, "location_38", "bobcat", "0.jpg")) as im:
        assert im.size == (341, 256)
    manifest = json.loads(open(os.path.join(out, ".prepare.json")).read())
    assert manifest["total"] == 8  # the source's entries stay
    assert {k: manifest["resize"][k] for k in ("shorter_side", "resized", "copied")} == \
        {"shorter_side": 256, "resized": 8, "copied": 0}
    assert not os.path.exists(tmp_path / "small" / ".terra_incognita.partial")


def test_resize_refusals(tmp_path, capsys):
    _prepared(tmp_path / "full", n=1)
    with pytest.raises(DataError, match="below the 224 px"):
        resize_dataset("TerraIncognita", str(tmp_path / "full"), str(tmp_path / "s"), 128)
    with pytest.raises(DataError, match="give a --data_dir other than --from_dir"):
        resize_dataset("TerraIncognita", str(tmp_path / "full"), str(tmp_path / "full"), 256)
    with pytest.raises(DataError, match="prepare VLCS there first"):
        resize_dataset("VLCS", str(tmp_path / "full"), str(tmp_path / "s"), 256)
    with pytest.raises(SystemExit) as e:
        prepare.main(["--dataset", "TerraIncognita", "--data_dir", str(tmp_path / "s"), "--resize", "256"])
    assert e.value.code == 2 and "--resize N and --from_dir D go together" in capsys.readouterr().err


def test_prepare_cli_makes_the_resized_copy(tmp_path, capsys, monkeypatch):
    _prepared(tmp_path / "full", n=1)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # in-process: no worker pool inside pytest
    assert prepare.main(["--dataset", "TerraIncognita", "--from_dir", str(tmp_path / "full"),
                         "--data_dir", str(tmp_path / "r"), "--resize", "256"]) == 0
    assert "4 of 4 images resized to shorter side 256 px" in capsys.readouterr().out
    assert (tmp_path / "r" / "terra_incognita" / "location_46" / "bobcat" / "0.jpg").exists()


def test_loader_workers_share_the_usable_cores():
    assert loaders.loader_workers(3, cores=16) == 5    # 15 cores for 3 domain loaders
    assert loaders.loader_workers(1, cores=16) == 15
    assert loaders.loader_workers(3, cores=2) == 1     # never 0: the main process must not decode
    assert loaders.loader_workers(0, cores=4) == 3
    assert loaders.usable_cores() == len(os.sched_getaffinity(0))



def test_a_failed_resize_leaves_no_folder_that_looks_complete(tmp_path):
    base = _prepared(tmp_path / "full", n=1)
    (base / "location_38" / "bobcat" / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"cannot read image .*bad\.jpg"):
        resize_dataset("TerraIncognita", str(tmp_path / "full"), str(tmp_path / "s"), 256, workers=1)
    assert sorted(os.listdir(tmp_path / "s")) == []  # neither the copy nor its .partial
