"""Atomic writes: readers never see half a file; a failed write changes nothing."""
import os

import pytest

from domainbed_align.lib.misc import atomic_open, atomic_write_text, json_line


class Boom(Exception):
    pass


def test_exception_inside_write_keeps_old_file_and_no_temp(tmp_path):
    target = tmp_path / "results.jsonl"
    target.write_text("old\n")
    with pytest.raises(Boom):
        with atomic_open(str(target)) as f:
            f.write("new and half")
            f.flush()
            raise Boom()
    assert target.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["results.jsonl"]


def test_binary_mode_failure_keeps_old_file(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"\x00old")
    with pytest.raises(Boom):
        with atomic_open(str(target), "wb") as f:
            f.write(b"\x01new")
            raise Boom()
    assert target.read_bytes() == b"\x00old"
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_target_is_untouched_until_the_block_ends(tmp_path):
    target = tmp_path / "done"
    target.write_text("before")
    with atomic_open(str(target)) as f:
        f.write("after")
        f.flush()
        assert target.read_text() == "before"           # not written in place
        temps = [p for p in os.listdir(tmp_path) if p != "done"]
        assert len(temps) == 1
        assert temps[0].startswith(".done.") and temps[0].endswith(".tmp")  # beside it, hidden
    assert target.read_text() == "after"
    assert os.listdir(tmp_path) == ["done"]


def test_new_file_in_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    atomic_write_text("fresh.txt", "a\nb\n")
    assert (tmp_path / "fresh.txt").read_text() == "a\nb\n"
    assert os.listdir(tmp_path) == ["fresh.txt"]
    atomic_write_text("fresh.txt", "c")
    assert (tmp_path / "fresh.txt").read_text() == "c"


def test_failed_new_file_leaves_nothing(tmp_path):
    with pytest.raises(Boom):
        with atomic_open(str(tmp_path / "x.txt")) as f:
            f.write("x")
            raise Boom()
    assert os.listdir(tmp_path) == []


def test_json_line_is_sorted_keys_and_one_newline():
    assert json_line({"b": 1, "a": [1, 2], "c": {"z": 0, "y": None}}) == \
        '{"a": [1, 2], "b": 1, "c": {"y": null, "z": 0}}\n'


def test_fsync_reaches_the_disk_by_default_and_only_then(tmp_path, monkeypatch):
    """Durability: the data is fsynced before the rename unless the caller opts out."""
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    atomic_write_text(tmp_path / "a.txt", "x")
    assert len(synced) == 1 and (tmp_path / "a.txt").read_text() == "x"
    atomic_write_text(tmp_path / "b.txt", "y", fsync=False)
    assert len(synced) == 1 and (tmp_path / "b.txt").read_text() == "y"
    with atomic_open(tmp_path / "c.txt") as f:  # text mode by default
        f.write("z")
    assert len(synced) == 2 and (tmp_path / "c.txt").read_text() == "z"
