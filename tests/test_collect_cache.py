"""The collector's cache: a repeat call parses only changed results.jsonl files, gives the same
output as a cold call, survives corruption and two collectors at once."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from domainbed_align import collect_results
from domainbed_align.report import cache as collect_cache, records

TINY = os.path.join(os.path.dirname(__file__), "data", "tiny_sweep")


@pytest.fixture
def sweep_dir(tmp_path):
    path = tmp_path / "sweep"
    shutil.copytree(TINY, path)
    return path


@pytest.fixture
def reads(monkeypatch):
    """Names of the run folders whose results.jsonl the collector parses."""
    seen = []
    original = records._read_run_part

    def counting(job):
        seen.append(os.path.basename(os.path.dirname(job[1])))
        return original(job)

    monkeypatch.setattr(records, "_read_run_part", counting)
    return seen


def _collect(capsys, sweep_dir, *extra):
    capsys.readouterr()
    assert collect_results.main(["--input_dir", str(sweep_dir), "--workers", "1", *extra]) == 0
    out = capsys.readouterr()
    return out.out, out.err


def _runs(sweep_dir):
    return sorted(n for n in os.listdir(sweep_dir)
                  if os.path.exists(os.path.join(sweep_dir, n, "results.jsonl"))
                  and os.path.exists(os.path.join(sweep_dir, n, "done")))


def test_repeat_call_parses_only_what_changed(sweep_dir, reads, capsys):
    cold, _ = _collect(capsys, sweep_dir, "--no_cache")
    assert sorted(reads) == _runs(sweep_dir) and not (sweep_dir / collect_cache.CACHE_FILE).exists()
    reads.clear()
    first, _ = _collect(capsys, sweep_dir)
    assert sorted(reads) == _runs(sweep_dir) and first == cold
    reads.clear()
    again, _ = _collect(capsys, sweep_dir)
    assert reads == [] and again == cold
    # a live sweep: one run writes another record; only that file is parsed again
    name = _runs(sweep_dir)[0]
    path = sweep_dir / name / "results.jsonl"
    lines = path.read_text().splitlines()
    last = json.loads(lines[-1])
    last["step"] += 1
    last["env0_out_acc"] = 1.0
    path.write_text("\n".join(lines + [json.dumps(last, sort_keys=True)]) + "\n")
    reads.clear()
    changed, _ = _collect(capsys, sweep_dir)
    assert reads == [name]
    reads.clear()
    assert _collect(capsys, sweep_dir, "--no_cache")[0] == changed
    # a removed run disappears from the tables without parsing anything
    shutil.rmtree(sweep_dir / name)
    reads.clear()
    removed, _ = _collect(capsys, sweep_dir)
    assert reads == [] and removed != changed
    assert removed == _collect(capsys, sweep_dir, "--no_cache")[0]


def test_corrupt_cache_is_ignored_and_rebuilt(sweep_dir, reads, capsys):
    cold, _ = _collect(capsys, sweep_dir, "--no_cache")
    _collect(capsys, sweep_dir)
    (sweep_dir / collect_cache.CACHE_FILE).write_bytes(b"PK\x03\x04 truncated")
    (sweep_dir / collect_cache.REPORT_FILE).write_text("{not json")
    reads.clear()
    out, err = _collect(capsys, sweep_dir)
    assert out == cold and "ignoring the unreadable collector cache" in err
    assert sorted(reads) == _runs(sweep_dir)
    reads.clear()
    assert _collect(capsys, sweep_dir)[0] == cold and reads == []


def test_two_collectors_at_once(sweep_dir):
    cmd = [sys.executable, "-m", "domainbed_align.collect_results", "--input_dir", str(sweep_dir),
           "--workers", "1"]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]
    assert not [f for f in os.listdir(sweep_dir) if f.endswith(".tmp")]  # no temp file left
    cache = collect_cache.RecordCache.load(str(sweep_dir))
    assert sorted(cache.entries) == _runs(sweep_dir) and cache.ckpts is not None


def test_no_write_leaves_the_folder_alone(sweep_dir, capsys):
    before = sorted(os.listdir(sweep_dir))
    _collect(capsys, sweep_dir, "--no_write")
    assert sorted(os.listdir(sweep_dir)) == before


def test_a_cache_replaced_between_header_and_parts_is_not_torn(sweep_dir, capsys):
    """Collector A reads the cache header; collector B then renames a new cache over it (its
    runs, offsets and widths differ); A's lazy part reads must still come from A's file."""
    import numpy as np
    _collect(capsys, sweep_dir)
    first = collect_cache.RecordCache.load(str(sweep_dir))   # header only, parts lazy
    names = sorted(first.entries)
    shutil.rmtree(sweep_dir / names[0])   # B sees one run fewer: every offset shifts
    _collect(capsys, sweep_dir)
    for k, name in enumerate(names[1:]):
        got = first.part(name)
        want = records._read_run_part((k, str(sweep_dir / name / "results.jsonl")))[0]
        np.testing.assert_array_equal(got.steps, want.steps)
        np.testing.assert_array_equal(got.acc_in, want.acc_in)
        np.testing.assert_array_equal(got.acc_out, want.acc_out)
