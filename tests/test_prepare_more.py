"""prepare and check for PACS, OfficeHome and DomainNet, on fabricated zips of real JPEGs with
the real archives' layouts (tests/fake_datasets.py); offline, a second each."""
import json
import os
import shutil

import pytest

from fake_datasets import (DOMAIN_NET_DOMAINS, OFFICE_HOME_DOMAINS, PACS_DOMAINS,
                           domain_net_members, expected_counts, jpeg_bytes, office_home_members,
                           pacs_members, png_bytes, tree, vlcs_members, write_tar, write_zip)
from domainbed_align.datasets import check, prepare


def run(capsys, module, *args):
    code = module.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_nothing_in_place(data_dir, folder):
    assert not (data_dir / folder).exists()
    assert not (data_dir / f".{folder}.partial").exists()


def without_prefix(members, prefix):
    return {k[len(prefix):]: v for k, v in members.items() if k.endswith(".jpg")}


# name -> (folder, archive members, prefix inside the archive, domains)
SINGLE = {
    "PACS": ("PACS", pacs_members(), "kfold/", PACS_DOMAINS),
    "OfficeHome": ("office_home", office_home_members(), "OfficeHomeDataset_10072016/",
                   OFFICE_HOME_DOMAINS),
}


N_IMAGES = {"PACS": 4 * 7 * 2, "OfficeHome": 4 * 65}   # domains x classes x images per class


def _single_archive(tmp_path, name):
    """(the archive written to tmp_path, the data folder to prepare into)."""
    archive = tmp_path / f"{name}.zip"
    write_zip(archive, SINGLE[name][1])
    return archive, tmp_path / "data"


@pytest.mark.parametrize("name", SINGLE)
def test_single_archive_builds_the_exact_layout(tmp_path, capsys, name):
    folder, members, prefix, domains = SINGLE[name]
    archive, data = _single_archive(tmp_path, name)
    counts = expected_counts(members, domains)
    code, out, err = run(capsys, prepare, "--dataset", name, "--data_dir", data, "--archive", archive,
                         "--expected_counts", json.dumps(counts))
    assert code == 0, err
    # every image byte-identical under <folder>/<Domain>/<class>/; junk and index files left out
    assert tree(data / folder) == without_prefix(members, prefix)
    n = N_IMAGES[name]
    assert counts["total"] == n
    manifest = json.loads((data / folder / ".prepare.json").read_text())
    assert manifest["total"] == n and manifest["build"]["skipped_files"] == len(members) - n
    assert sorted(os.listdir(data)) == [f".{folder}.lock", folder]
    code, out, err = run(capsys, check, "--dataset", name, "--data_dir", data,
                         "--expected_counts", json.dumps(counts))
    assert code == 0 and out.rstrip().endswith("OK"), out


@pytest.mark.parametrize("name", SINGLE)
def test_published_counts_are_enforced_and_nothing_is_left_half_written(tmp_path, capsys, name):
    archive, data = _single_archive(tmp_path, name)
    code, _, err = run(capsys, prepare, "--dataset", name, "--data_dir", data, "--archive", archive)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    total = check.get_layout(name).expected["total"]
    assert f"image count differs: total {N_IMAGES[name]}, expected {total:,}" in lines[0]
    assert "nothing was put in place" in lines[0]
    assert_nothing_in_place(data, SINGLE[name][0])


@pytest.mark.parametrize("name,other", [("PACS", "OfficeHome"), ("OfficeHome", "PACS"),
                                        ("PACS", "VLCS")])
def test_another_datasets_archive_is_refused(tmp_path, capsys, name, other):
    archive = tmp_path / "other.zip"
    if other == "VLCS":
        archive = tmp_path / "VLCS.tar.gz"
        write_tar(archive, vlcs_members())
    else:
        write_zip(archive, SINGLE[other][1])
    data = tmp_path / "data"
    code, _, err = run(capsys, prepare, "--dataset", name, "--data_dir", data, "--archive", archive)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: {archive} does not look like DomainBed's {name} archive")
    assert_nothing_in_place(data, SINGLE[name][0])


def _domain_net_archives(tmp_path, duplicates=("clipart/zigzag/zigzag_001.jpg",
                                                 "real/The_Eiffel_Tower/The_Eiffel_Tower_000.jpg",
                                                 "sketch/zigzag/not_in_the_archive.jpg")):
    members = domain_net_members()
    paths = []
    for d in DOMAIN_NET_DOMAINS:
        write_zip(tmp_path / f"{d}.zip", members[d])
        paths.append(tmp_path / f"{d}.zip")
    dup = tmp_path / "domain_net_duplicates.txt"
    dup.write_text("".join(f"{p}\n" for p in duplicates))
    return members, paths, dup


def test_domain_net_from_six_zips_leaves_out_the_duplicate_list(tmp_path, capsys):
    members, paths, dup = _domain_net_archives(tmp_path)
    data = tmp_path / "data"
    # unnamed archives, in another order: told apart by the domain folder of their first file
    code, out, err = run(capsys, prepare, "--dataset", "DomainNet", "--data_dir", data,
                         *[a for p in reversed(paths) for a in ("--archive", p)], "--archive", dup,
                         "--expected_counts", json.dumps({"total": 6 * 347 - 2}))
    assert code == 0, err
    want = {k: v for m in members.values() for k, v in m.items()}
    del want["clipart/zigzag/zigzag_001.jpg"], want["real/The_Eiffel_Tower/The_Eiffel_Tower_000.jpg"]
    assert tree(data / "domain_net") == want                 # 6 x (345 + 2), minus 2 listed
    build = json.loads((data / "domain_net" / ".prepare.json").read_text())["build"]
    assert (build["images"], build["duplicates_removed"], build["duplicates_listed"]) == (2080, 2, 3)
    # DomainNet's published counts describe no build of the cleaned archives: a warning only
    code, out, err = run(capsys, check, "--dataset", "DomainNet", "--data_dir", data)
    assert code == 0 and "warning: image count differs" in out and "total 2,080, expected 586,575" in out


def test_domain_net_refuses_a_zip_of_another_domain_and_a_wrong_count(tmp_path, capsys):
    members, paths, dup = _domain_net_archives(tmp_path)
    data = tmp_path / "data"
    named = [a for d, p in zip(DOMAIN_NET_DOMAINS, paths) for a in ("--archive", f"{d}={p}")]
    swapped = [a.replace("clipart.zip", "real.zip") if a.startswith("clipart=") else a for a in named]
    code, _, err = run(capsys, prepare, "--dataset", "DomainNet", "--data_dir", data, *swapped,
                       "--archive", f"duplicates={dup}")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "does not look like DomainNet's clipart archive" in err
    assert_nothing_in_place(data, "domain_net")
    code, _, err = run(capsys, prepare, "--dataset", "DomainNet", "--data_dir", data, *named,
                       "--archive", f"duplicates={dup}", "--expected_counts",
                       json.dumps({"total": 2082, "clipart": 347}))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "image count differs: total 2,080, expected 2,082 (and 1 more); nothing was put in place" in err
    assert_nothing_in_place(data, "domain_net")
    # a PACS archive offered as DomainNet's sketch zip: its classes are not DomainNet's
    pacs = tmp_path / "PACS.zip"
    write_zip(pacs, pacs_members(classes=("dog", "person")))
    code, _, err = run(capsys, prepare, "--dataset", "DomainNet", "--data_dir", data,
                       *[a if not a.startswith("sketch=") else f"sketch={pacs}" for a in named],
                       "--archive", f"duplicates={dup}")
    assert code == 2 and "images outside DomainNet's <Domain>/<class>/ folders" in err
    assert_nothing_in_place(data, "domain_net")


def test_a_file_that_is_not_the_duplicate_list_is_refused(tmp_path, capsys):
    members, paths, dup = _domain_net_archives(tmp_path, duplicates=("PACS/dog/a.jpg",))
    code, _, err = run(capsys, prepare, "--dataset", "DomainNet", "--data_dir", tmp_path / "data",
                       *[a for p in paths for a in ("--archive", p)], "--archive", dup)
    assert code == 2 and "is not DomainNet's duplicate list" in err and "'PACS/dog/a.jpg'" in err


def test_prepare_points_domain_folder_users_to_check(tmp_path, capsys):
    code, _, err = run(capsys, prepare, "--dataset", "DomainFolder", "--data_dir", tmp_path)
    assert code == 2 and "DomainFolder reads a tree you already have" in err


# ---------------------------------------------------------------------- check

LAYOUTS = {  # name -> (folder, two domains, a declared class)
    "PACS": ("PACS", PACS_DOMAINS, "dog"),
    "OfficeHome": ("office_home", OFFICE_HOME_DOMAINS, "TV"),
    "DomainNet": ("domain_net", DOMAIN_NET_DOMAINS, "The_Eiffel_Tower"),
    "DomainFolder": ("tree", ("cartoons", "photos", "x-rays"), "cat"),
}


def _write_tree(root, domains, cls, masks=None):
    for i, d in enumerate(domains):
        (root / d / cls).mkdir(parents=True)
        (root / d / cls / "a.jpg").write_bytes(jpeg_bytes(i))
        if masks is not None:
            (masks / d / cls).mkdir(parents=True)
            (masks / d / cls / "a.png").write_bytes(png_bytes(box=(2, 2, 5, 4)))


@pytest.mark.parametrize("name", LAYOUTS)
def test_check_finds_missing_domain_stray_class_truncated_jpeg_missing_mask(tmp_path, capsys, name):
    folder, domains, cls = LAYOUTS[name]
    data = tmp_path / "data"
    root = data if name == "DomainFolder" else data / folder
    masks = tmp_path / "masks"
    _write_tree(root, domains, cls, masks)
    if name == "DomainFolder":  # its domains.json names what the tree must hold
        (root / "domains.json").write_text(json.dumps({"domains": list(domains), "classes": [cls]}))
    data_arg = root if name == "DomainFolder" else data
    code, out, err = run(capsys, check, "--dataset", name, "--data_dir", data_arg, "--mask_dir", masks,
                         "--limit", "0")
    kinds = ("missing domain folder", "stray class folder", "unreadable image", "missing mask")
    assert not any(k in out for k in kinds), out      # (the other declared classes are absent)
    assert "stray file" not in out                   # DomainFolder's domains.json is no stray file
    assert code == (0 if name == "DomainFolder" else 1), out
    # now break it four ways
    shutil.rmtree(root / domains[-1])
    (root / domains[0] / "not_a_class").mkdir()
    (root / domains[0] / "not_a_class" / "x.jpg").write_bytes(jpeg_bytes(9))
    good = jpeg_bytes(1)
    (root / domains[1] / cls / "a.jpg").write_bytes(good[: len(good) // 2])
    (masks / domains[0] / cls / "a.png").unlink()
    code, out, err = run(capsys, check, "--dataset", name, "--data_dir", data_arg, "--mask_dir", masks,
                         "--limit", "0")
    assert code == 1, out
    assert f"problem: missing domain folder (1):\n  {domains[-1]}" in out
    assert f"problem: stray class folder (1):\n  {domains[0]}/not_a_class" in out
    assert f"problem: unreadable image (1):\n  {domains[1]}/{cls}/a.jpg" in out
    assert f"problem: missing mask (1):\n  {domains[0]}/{cls}/a.png" in out
