"""check: every kind of finding on a small fabricated VLCS / TerraIncognita folder."""
import json

import pytest

from fake_datasets import (TERRA_CLASSES, VLCS_CLASSES, VLCS_DOMAINS, jpeg_bytes, png_bytes,
                           vlcs_expected)
from domainbed_align.datasets import check

COUNTS = json.dumps(vlcs_expected((1, 1, 1, 1)))  # 5 per domain, 20 in all


@pytest.fixture
def folders(tmp_path):
    """A clean VLCS folder (one 8x6 image per class) and its mask folder (a box per image)."""
    data, masks = tmp_path / "data", tmp_path / "masks"
    for i, d in enumerate(VLCS_DOMAINS):
        for j, c in enumerate(VLCS_CLASSES):
            (data / "VLCS" / d / c).mkdir(parents=True)
            (data / "VLCS" / d / c / f"img{i}{j}.jpg").write_bytes(jpeg_bytes(5 * i + j))
            (masks / d / c).mkdir(parents=True)
            (masks / d / c / f"img{i}{j}.png").write_bytes(png_bytes(box=(1, 1, 4, 4)))
    return data, masks


def run(capsys, *args):
    code = check.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_clean_folder_passes(folders, capsys):
    data, masks = folders
    code, out, _ = run(capsys, "--dataset", "VLCS", "--data_dir", data, "--mask_dir", masks,
                       "--expected_counts", COUNTS)
    assert code == 0 and out.endswith("OK\n")
    assert "Caltech101: 5 (bird 1, car 1, chair 1, dog 1, person 1)" in out


def test_missing_class_folder_corrupt_image_and_missing_mask_are_all_named(folders, capsys):
    data, masks = folders
    for f in (data / "VLCS" / "LabelMe" / "dog").iterdir():
        f.unlink()
    (data / "VLCS" / "LabelMe" / "dog").rmdir()
    good = data / "VLCS" / "SUN09" / "car" / "img21.jpg"
    good.write_bytes(good.read_bytes()[:40])  # a JPEG cut short
    (masks / "VOC2007" / "person" / "img34.png").unlink()
    code, out, _ = run(capsys, "--dataset", "VLCS", "--data_dir", data, "--mask_dir", masks,
                       "--expected_counts", COUNTS)
    assert code == 1
    assert "problem: missing class folder (1):\n  LabelMe/dog\n" in out
    assert "problem: unreadable image (1):\n  SUN09/car/img21.jpg (" in out
    assert "problem: missing mask (1):\n  VOC2007/person/img34.png\n" in out
    assert "problem: image count differs (2):\n  total 19, expected 20\n  LabelMe 4, expected 5\n" in out
    assert out.endswith("FAILED: 5 problems\n")


def test_every_other_finding(folders, capsys):
    data, masks = folders
    base = data / "VLCS"
    (base / "PACS").mkdir()                                        # stray domain folder
    (base / "Caltech101" / "cat").mkdir()                          # stray class folder
    (base / "Caltech101" / "bird" / "img00.jpg").write_bytes(b"")  # zero-byte image
    (base / "LabelMe" / "car" / "notes.txt").write_text("x")       # ignored file: a warning
    (masks / "LabelMe" / "bird" / "img10.png").write_bytes(png_bytes(size=(16, 12), box=(1, 1, 3, 3)))
    (masks / "LabelMe" / "car" / "img11.png").write_bytes(png_bytes(value=127))  # empty (< 128)
    (masks / "SUN09" / "bird" / "img20.png").write_bytes(png_bytes(value=128))   # full (>= 128)
    (masks / "SUN09" / "car" / "orphan.png").write_bytes(png_bytes())
    code, out, _ = run(capsys, "--dataset", "VLCS", "--data_dir", data, "--mask_dir", masks,
                       "--expected_counts", COUNTS)
    assert code == 1
    for line in ["problem: stray domain folder (1):\n  PACS\n",
                 "problem: stray class folder (1):\n  Caltech101/cat\n",
                 "problem: zero-byte image (1):\n  Caltech101/bird/img00.jpg\n",
                 "problem: mask size differs from image (1):\n  LabelMe/bird/img10.png 16x12, image 8x6\n",
                 "problem: empty mask (1):\n  LabelMe/car/img11.png\n",
                 "problem: full mask (1):\n  SUN09/bird/img20.png\n",
                 "warning: not an image (ignored by the loader) (1):\n  LabelMe/car/notes.txt\n",
                 "warning: mask without image (1):\n  SUN09/car/orphan.png\n"]:
        assert line in out, line
    assert out.endswith("FAILED: 6 problems\n")


def test_count_policy_vlcs_error_terra_warning_and_usage_errors(folders, tmp_path, capsys):
    data, _ = folders
    code, out, _ = run(capsys, "--dataset", "VLCS", "--data_dir", data, "--no_decode")
    assert code == 1 and "total 20, expected 10,729" in out and "Caltech101 5, expected 1,415" in out
    terra = tmp_path / "t"
    for loc in ("location_100", "location_38", "location_43", "location_46"):
        for c in TERRA_CLASSES:
            (terra / "terra_incognita" / loc / c).mkdir(parents=True)
            (terra / "terra_incognita" / loc / c / "a.jpg").write_bytes(jpeg_bytes(1))
    code, out, _ = run(capsys, "--dataset", "TerraIncognita", "--data_dir", terra)
    assert code == 0 and "warning: image count differs (1):\n  total 40, expected 24,788 (" in out
    code, out, _ = run(capsys, "--dataset", "TerraIncognita", "--data_dir", terra,
                       "--expected_counts", '{"location_38": {"cat": 2}}')
    assert code == 1 and "problem: image count differs (1):\n  location_38/cat 1, expected 2\n" in out
    code, _, err = run(capsys, "--dataset", "VLCS", "--data_dir", data, "--expected_counts",
                       '{"Caltech": 3}')
    assert code == 2 and err.startswith("error: --expected_counts: bad entry 'Caltech'")
    code, out, _ = run(capsys, "--dataset", "VLCS", "--data_dir", tmp_path / "nowhere")
    assert code == 1 and "problem: missing data folder (1)" in out


def test_empty_masks_of_terra_incognitas_empty_class_are_only_warnings(tmp_path, capsys):
    data, masks = tmp_path / "d", tmp_path / "m"
    for loc in ("location_100", "location_38", "location_43", "location_46"):
        for c in TERRA_CLASSES:
            (data / "terra_incognita" / loc / c).mkdir(parents=True)
            (data / "terra_incognita" / loc / c / "a.jpg").write_bytes(jpeg_bytes(2))
            (masks / loc / c).mkdir(parents=True)
            (masks / loc / c / "a.png").write_bytes(png_bytes(value=0 if c == "empty" else 255,
                                                              box=None if c == "empty" else (0, 0, 2, 2)))
    code, out, _ = run(capsys, "--dataset", "TerraIncognita", "--data_dir", data, "--mask_dir",
                       masks, "--expected_counts", '{"total": 40}')
    assert code == 0 and "warning: empty mask (4):" in out


def test_no_decode_reads_headers_only(folders, capsys):
    data, _ = folders
    (data / "VLCS" / "Caltech101" / "bird" / "img00.jpg").write_bytes(b"")
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48).save(buf, "JPEG")
    cut = data / "VLCS" / "SUN09" / "car" / "img21.jpg"
    cut.write_bytes(buf.getvalue()[:-500])  # header intact, pixels cut short
    code, out, _ = run(capsys, "--dataset", "VLCS", "--data_dir", data, "--no_decode",
                       "--expected_counts", COUNTS)
    assert code == 1 and "zero-byte image (1)" in out and "unreadable" not in out
    code, out, _ = run(capsys, "--dataset", "VLCS", "--data_dir", data, "--expected_counts", COUNTS)
    assert "problem: unreadable image (1):\n  SUN09/car/img21.jpg" in out
