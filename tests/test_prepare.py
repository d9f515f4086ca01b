"""prepare: DomainBed layouts from fabricated archives, downloads from a local server, bad input.

Everything runs offline: archives are fabricated with the real layouts (tests/fake_datasets.py)
and downloads go to a threaded http.server on 127.0.0.1 that honours Range requests.
"""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_module
from fake_datasets import (RangeServer, jpeg_bytes, tree, vlcs_expected, vlcs_members,
                           write_tar, write_terra_archives)
from domainbed_align.datasets import prepare

PREPARE = "domainbed_align.datasets.prepare"
VLCS_COUNTS = json.dumps(vlcs_expected())


def run(capsys, *args):
    """prepare's main in-process: (exit code, stdout, stderr)."""
    code = prepare.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_nothing_in_place(data_dir, folder="VLCS"):
    assert not (data_dir / folder).exists()
    assert not (data_dir / f".{folder}.partial").exists()


@pytest.fixture
def vlcs_archive(tmp_path):
    path = tmp_path / "VLCS.tar.gz"
    write_tar(path, vlcs_members())
    return path


def test_vlcs_from_archive_builds_the_exact_layout_and_records_the_sha256(tmp_path, capsys,
                                                                           vlcs_archive):
    data = tmp_path / "data"
    code, out, err = run(capsys, "--dataset", "VLCS", "--data_dir", data, "--archive", vlcs_archive,
                         "--expected_counts", VLCS_COUNTS)
    assert code == 0, err
    members = vlcs_members()
    want = {k[len("VLCS/"):]: v for k, v in members.items() if not k.endswith(".DS_Store")}
    assert tree(data / "VLCS") == want  # 35 files, byte-identical, junk skipped
    digest = hashlib.sha256(vlcs_archive.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in out and "no published checksum" in out
    manifest = json.loads((data / "VLCS" / ".prepare.json").read_text())
    assert manifest["sources"]["archive"]["sha256"] == digest
    assert manifest["total"] == 35 and sum(manifest["counts"]["Caltech101"].values()) == 5
    assert sorted(os.listdir(data)) == ["VLCS"]  # no partial folder, no lock file left
    code, out, _ = run(capsys, "--dataset", "VLCS", "--data_dir", data, "--archive", vlcs_archive,
                       "--expected_counts", VLCS_COUNTS)
    assert code == 0 and "already prepared (35 images)" in out


def test_terra_incognita_follows_upstreams_rule_in_one_pass(tmp_path, capsys):
    img, ann, want = write_terra_archives(tmp_path)
    data = tmp_path / "data"
    # archives given unnamed and in the "wrong" order: told apart by their content
    code, out, err = run(capsys, "--dataset", "TerraIncognita", "--data_dir", data,
                         "--archive", ann, "--archive", img, "--expected_counts", '{"total": 43}')
    assert code == 0, err
    got = tree(data / "terra_incognita")
    assert got == want and len(got) == 43  # 40 + the two-class image twice + two-boxes once
    assert "location_38/cat/two-classes.jpg" in got and "location_38/dog/two-classes.jpg" in got
    assert not any(n.endswith(("elsewhere.jpg", "deer.jpg", "unannotated.jpg")) for n in got)
    build = json.loads((data / "terra_incognita" / ".prepare.json").read_text())["build"]
    assert build == {"images": 42, "copies": 43, "multi_class_images": 1}


def test_terra_count_difference_is_a_warning_but_vlcs_one_is_an_error(tmp_path, capsys,
                                                                     vlcs_archive):
    img, ann, _ = write_terra_archives(tmp_path)
    code, out, err = run(capsys, "--dataset", "TerraIncognita", "--data_dir", tmp_path / "t",
                         "--archive", f"images={img}", "--archive", f"annotations={ann}")
    assert code == 0, err
    assert "warning: image count differs: total 43, expected 24,788" in err
    code, out, err = run(capsys, "--dataset", "VLCS", "--data_dir", tmp_path / "v",
                         "--archive", vlcs_archive)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: the built VLCS fails the final check")
    assert "total 35, expected 10,729" in err
    assert_nothing_in_place(tmp_path / "v")


@pytest.mark.parametrize("damage", ["gz cut in the middle", "gz without its crc trailer",
                                    "tar cut at a member boundary", "bz2 cut", "garbage"])
def test_corrupt_archive_is_one_line_and_leaves_nothing(tmp_path, capsys, damage):
    import tarfile
    kind = damage.split()[0]
    archive = tmp_path / "VLCS.archive"
    write_tar(archive, vlcs_members(), mode={"gz": "w:gz", "tar": "w", "bz2": "w:bz2"}.get(kind, "w"))
    blob = archive.read_bytes()
    if damage == "garbage":
        blob = b"<html>nope</html>" * 50
    elif "trailer" in damage:  # every tar block is there; only the gzip end check sees it
        blob = blob[:-8]
    elif "boundary" in damage:  # the cut that tarfile alone takes for a clean end of archive
        with tarfile.open(archive) as tf:
            blob = blob[:tf.getmembers()[20].offset]
    else:
        blob = blob[: len(blob) // 2]
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(blob)
    data = tmp_path / "data"
    code, _, err = run(capsys, "--dataset", "VLCS", "--data_dir", data, "--archive", bad,
                       "--expected_counts", VLCS_COUNTS)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: archive {bad} is corrupt, truncated or not a .tar"), err
    assert_nothing_in_place(data)
    assert os.listdir(data) == []   # issue 22: no empty .VLCS.lock left behind


def test_wrong_checksum_is_refused(tmp_path, capsys, vlcs_archive):
    code, _, err = run(capsys, "--dataset", "VLCS", "--data_dir", tmp_path / "d", "--archive",
                       vlcs_archive, "--sha256", "0" * 64, "--expected_counts", VLCS_COUNTS)
    assert code == 2 and err.count("\n") == 1 and f"expected {'0' * 64}" in err
    assert_nothing_in_place(tmp_path / "d")
    digest = hashlib.sha256(vlcs_archive.read_bytes()).hexdigest()
    code, out, err = run(capsys, "--dataset", "VLCS", "--data_dir", tmp_path / "d", "--archive",
                         vlcs_archive, "--sha256", digest, "--expected_counts", VLCS_COUNTS)
    assert code == 0 and f"sha256 {digest}" in out and "verified" in out


def test_archive_of_the_wrong_dataset_is_named(tmp_path, capsys, vlcs_archive):
    img, ann, _ = write_terra_archives(tmp_path)
    code, _, err = run(capsys, "--dataset", "VLCS", "--data_dir", tmp_path / "a", "--archive", img)
    assert code == 2 and "does not look like DomainBed's VLCS archive" in err
    assert "eccv_18_all_images_sm/38-bird.jpg" in err
    code, _, err = run(capsys, "--dataset", "TerraIncognita", "--data_dir", tmp_path / "b",
                       "--archive", f"images={img}", "--archive", f"annotations={vlcs_archive}")
    assert code == 2 and "holds no camera-trap annotation JSON" in err
    code, _, err = run(capsys, "--dataset", "TerraIncognita", "--data_dir", tmp_path / "c",
                       "--archive", f"images={vlcs_archive}", "--archive", f"annotations={ann}")
    assert code == 2 and "holds none of the 42 images the annotations name" in err
    for d in "abc":
        assert_nothing_in_place(tmp_path / d, "VLCS")
        assert_nothing_in_place(tmp_path / d, "terra_incognita")


def test_unwritable_data_dir(tmp_path, capsys, vlcs_archive):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # a path below a regular file cannot be created, even by root
    code, _, err = run(capsys, "--dataset", "VLCS", "--data_dir", blocker / "data",
                       "--archive", vlcs_archive)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: cannot write to --data_dir {blocker / 'data'}")


def test_a_killed_build_is_cleaned_up_and_redone(tmp_path, capsys, vlcs_archive):
    data = tmp_path / "data"
    stale = data / ".VLCS.partial" / "Caltech101" / "bird"
    stale.mkdir(parents=True)  # what SIGKILL in the middle of a build leaves
    (stale / "half-written.jpg").write_bytes(b"\xff\xd8")
    code, _, err = run(capsys, "--dataset", "VLCS", "--data_dir", data, "--archive", vlcs_archive,
                       "--expected_counts", VLCS_COUNTS)
    assert code == 0, err
    assert "Caltech101/bird/half-written.jpg" not in tree(data / "VLCS")
    assert len(tree(data / "VLCS")) == 35 and not (data / ".VLCS.partial").exists()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_is_one_clear_line_and_no_folder(tmp_path):
    data = tmp_path / "data"
    proc = run_module(PREPARE, "--dataset", "VLCS", "--data_dir", data, "--url",
                      f"http://127.0.0.1:{closed_port()}/VLCS.tar.gz", check=False, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: cannot reach 127.0.0.1:")
    assert "--archive PATH" in proc.stderr
    assert_nothing_in_place(data)
    assert sorted(os.listdir(data)) == []   # not even the lock file


def test_http_errors_and_web_pages_are_named(tmp_path, capsys):
    with RangeServer({"/page": b"<html>quota exceeded</html>"}, content_type="text/html") as srv:
        code, _, err = run(capsys, "--dataset", "VLCS", "--data_dir", tmp_path / "a",
                           "--url", srv.url("/missing.tar.gz"))
        assert code == 2 and "answered HTTP 404" in err and "--url with a mirror" in err
        code, _, err = run(capsys, "--dataset", "VLCS", "--data_dir", tmp_path / "b",
                           "--url", srv.url("/page"))
        assert code == 2 and "sent a web page instead of a file" in err


def test_download_resumes_with_a_range_request_after_a_kill(tmp_path, capsys, vlcs_archive):
    blob = vlcs_archive.read_bytes()
    data = tmp_path / "data"
    part = data / ".downloads" / "VLCS.tar.gz.part"
    with RangeServer({"/VLCS.tar.gz": blob}) as srv:
        srv.stall_at = len(blob) // 2
        args = ["--dataset", "VLCS", "--data_dir", data, "--url", srv.url("/VLCS.tar.gz"),
                "--expected_counts", VLCS_COUNTS]
        env = dict(os.environ, PYTHONPATH=REPO)
        proc = subprocess.Popen([sys.executable, "-m", PREPARE, *map(str, args)], cwd=REPO,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 60
            while not (part.exists() and part.stat().st_size >= srv.stall_at):
                assert proc.poll() is None and time.time() < deadline, "download did not start"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert_nothing_in_place(data)
        assert part.read_bytes() == blob[: srv.stall_at]
        srv.stall_at = None
        code, out, err = run(capsys, *args)
        assert code == 0, err
        assert srv.requests[-1] == ("/VLCS.tar.gz", f"bytes={len(blob) // 2}-", '"v1"')
    assert len(tree(data / "VLCS")) == 35
    assert f"sha256 {hashlib.sha256(blob).hexdigest()}" in out
    assert not (data / ".downloads" / "VLCS.tar.gz").exists()  # removed after success


def test_a_dropped_connection_is_resumed_within_the_run(tmp_path):
    from domainbed_align.datasets.download import download
    blob = os.urandom(50_000)
    with RangeServer({"/f": blob}) as srv:
        srv.drop_at = 20_000
        dest = download(srv.url("/f"), str(tmp_path / "f"))
    assert open(dest, "rb").read() == blob
    assert [r[1] for r in srv.requests] == [None, "bytes=20000-"]


def test_a_part_of_a_changed_remote_file_is_not_spliced(tmp_path):
    from domainbed_align.datasets.download import download
    new = os.urandom(30_000)
    dest = tmp_path / "f"
    (tmp_path / "f.part").write_bytes(b"old bytes")
    with RangeServer({"/f": new}, etag='"v2"') as srv:
        (tmp_path / "f.part.json").write_text(json.dumps({"url": srv.url("/f"), "validator": '"v1"'}))
        download(srv.url("/f"), str(dest))
        assert srv.requests == [("/f", "bytes=9-", '"v1"')]  # server answers 200: whole file
    assert dest.read_bytes() == new and not (tmp_path / "f.part.json").exists()


def weights_file(payload: bytes, good: bool) -> str:
    digest = hashlib.sha256(payload).hexdigest()
    return f"/resnet18-{digest[:8] if good else 'deadbeef'}.pth"


@pytest.mark.parametrize("good", [True, False])
def test_weights_are_fetched_and_hash_checked(tmp_path, capsys, monkeypatch, good):
    payload = b"not really a state dict" * 100
    name = weights_file(payload, good)
    with RangeServer({name: payload}, content_type="application/octet-stream") as srv:
        monkeypatch.setattr(prepare, "weights_url", lambda arch: srv.url(name))
        code, out, err = run(capsys, "--weights", "resnet18", "--out", tmp_path / "w")
    dest = tmp_path / "w" / name[1:]
    if good:
        assert code == 0 and dest.read_bytes() == payload
        assert "$TORCH_HOME/hub/checkpoints/" in out
    else:
        assert code == 2 and "torchvision expects deadbeef" in err and not dest.exists()


def test_weights_default_to_the_torch_hub_cache_and_unknown_arch_is_named(tmp_path, capsys,
                                                                          monkeypatch):
    import torch
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    payload = b"weights"
    name = weights_file(payload, True)
    with RangeServer({name: payload}) as srv:
        monkeypatch.setattr(prepare, "weights_url", lambda arch: srv.url(name))
        assert run(capsys, "--weights", "resnet50")[0] == 0
    assert (tmp_path / "hub" / "checkpoints" / name[1:]).read_bytes() == payload
    monkeypatch.undo()
    code, _, err = run(capsys, "--weights", "vit_b_16")
    assert code == 2 and err == "error: --weights 'vit_b_16': known are resnet18, resnet50\n"


def test_missing_weights_error_names_the_prepare_command(tmp_path, monkeypatch):
    import torch
    import torchvision
    from domainbed_align import networks
    from domainbed_align.lib.errors import ConfigError
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*a, **k):
        raise OSError("network unreachable")
    monkeypatch.setattr(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.__class__,
                        "get_state_dict", offline)
    with pytest.raises(ConfigError) as e:
        networks._load_imagenet_weights("resnet50")
    assert "`python -m domainbed_align.datasets.prepare --weights resnet50 --out DIR`" in str(e.value)
    assert "resnet50-0676ba61.pth" in str(e.value)


def test_bad_usage_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        prepare.main(["--data_dir", str(tmp_path)])
    assert e.value.code == 2
    code, _, err = run(capsys, "--dataset", "SVIRO", "--data_dir", tmp_path)
    assert code == 2 and "prepare knows VLCS, TerraIncognita, PACS, OfficeHome, DomainNet, not 'SVIRO'" in err
    code, _, err = run(capsys, "--dataset", "TerraIncognita", "--data_dir", tmp_path,
                       "--url", "http://mirror/x.tar.gz")
    assert code == 2 and "write --url NAME=VALUE" in err
    img = tmp_path / "x.tar.gz"
    write_tar(img, {"readme.txt": b"hello", "a.jpg": jpeg_bytes(1)})
    code, _, err = run(capsys, "--dataset", "TerraIncognita", "--data_dir", tmp_path,
                       "--archive", img)
    assert code == 2 and "cannot tell which of TerraIncognita's sources" in err


def test_an_archive_missing_a_class_fails_the_final_check(tmp_path, capsys):
    members = {k: v for k, v in vlcs_members().items() if "/SUN09/dog/" not in k}
    archive = tmp_path / "VLCS.tar.gz"
    write_tar(archive, members)
    code, _, err = run(capsys, "--dataset", "VLCS", "--data_dir", tmp_path / "d", "--archive",
                       archive, "--expected_counts", VLCS_COUNTS)
    assert code == 2 and err.count("\n") == 1
    assert "fails the final check: missing class folder: SUN09/dog (and 2 more)" in err
    assert "is the archive complete" in err
    assert_nothing_in_place(tmp_path / "d")


def test_a_complete_part_killed_before_its_rename_is_finished_by_a_416(tmp_path):
    from domainbed_align.datasets.download import download
    blob = os.urandom(10_000)
    (tmp_path / "f.part").write_bytes(blob)
    with RangeServer({"/f": blob}) as srv:
        (tmp_path / "f.part.json").write_text(json.dumps({"url": srv.url("/f"), "validator": '"v1"'}))
        download(srv.url("/f"), str(tmp_path / "f"))
        assert srv.requests == [("/f", "bytes=10000-", '"v1"')]
    assert (tmp_path / "f").read_bytes() == blob and not (tmp_path / "f.part").exists()
