"""Reading results.jsonl: duplicates with different values (last wins), half lines, counts."""
import json

import numpy as np

from domainbed_align import collect_results
from domainbed_align.lib import records as lib_records
from domainbed_align.report import records as report_records
from domainbed_align.collect_results import Sweep, parse_line, read_run
from domainbed_align.lib.records import is_done, read_jsonl

ARGS = {"algorithm": "ERM", "dataset": "Debug28", "test_envs": [0], "trial_seed": 0,
        "hparams_seed": 0}


def _rec(step, acc, args=ARGS):
    r = {"step": step, "args": args}
    for i in range(3):
        r[f"env{i}_in_acc"] = acc + i / 100
        r[f"env{i}_out_acc"] = acc + i / 10
    return r


def _write(path, lines):
    path.write_text("".join(lines))


def test_parse_line():
    assert parse_line('{"step": 1}') == {"step": 1}
    assert parse_line(b'{"step": 1.5, "x": null}\n') == {"step": 1.5, "x": None}
    assert parse_line('{"step": 1, "env0') is None        # truncated
    assert parse_line("[1, 2]") is None                     # valid JSON, not a record
    assert parse_line("3") is None
    assert parse_line("") is None


def test_parse_line_without_orjson(monkeypatch):
    monkeypatch.setattr(lib_records, "_fast_loads", None)
    assert parse_line('{"a": 0.1}') == {"a": 0.1}
    assert parse_line('{"a": ') is None
    assert parse_line('"text"') is None


def test_read_run_last_duplicate_wins_and_counts(tmp_path):
    p = tmp_path / "results.jsonl"
    _write(p, [json.dumps(_rec(0, 0.1)) + "\n",        # line 0
               json.dumps(_rec(2, 0.2)) + "\n",        # line 1, replaced by line 4
               "\n",                                   # line 2: blank, neither kept nor skipped
               json.dumps(_rec(0, 0.3)) + "\n",        # line 3, replaces line 0
               json.dumps(_rec(2, 0.4)) + "\n",        # line 4
               '{"step": 4, "no_args": 1}\n',          # line 5: parses; kept by the reader
               '{"args": {}}\n',                       # line 6: no step -> skipped
               '{"step": "5"}\n',                      # line 7: step not a number -> skipped
               '{"step": 6, "env0_in_a'])              # line 8: truncated -> skipped
    kept, n_skipped, n_dup = read_run(str(p))
    assert [i for i, _ in kept] == [3, 4, 5]
    assert [r["step"] for _, r in kept] == [0, 2, 4]
    assert kept[0][1]["env0_in_acc"] == 0.3 and kept[1][1]["env0_in_acc"] == 0.4
    assert (n_skipped, n_dup) == (3, 2)


def test_read_run_sorts_by_step_not_line(tmp_path):
    p = tmp_path / "results.jsonl"
    _write(p, [json.dumps(_rec(s, s / 10)) + "\n" for s in (4, 0, 2)])
    kept, n_skipped, n_dup = read_run(str(p))
    assert [(i, r["step"]) for i, r in kept] == [(1, 0), (2, 2), (0, 4)]
    assert (n_skipped, n_dup) == (0, 0)


def _run_dir(root, name, lines, done=True):
    d = root / name
    d.mkdir()
    _write(d / "results.jsonl", lines)
    if done:
        (d / "done").write_text("done")
    return d


def test_sweep_counts_and_warnings(tmp_path):
    _run_dir(tmp_path, "a", [json.dumps(_rec(0, 0.1)) + "\n", json.dumps(_rec(0, 0.5)) + "\n",
                             json.dumps(_rec(1, 0.6)) + "\n", '{"step": 2, "env'])
    _run_dir(tmp_path, "b", [json.dumps(_rec(0, 0.7, {**ARGS, "trial_seed": 1})) + "\n",
                             "garbage\n", "[]\n",
                             json.dumps(_rec(1, 0.8, {"dataset": "Debug28"})) + "\n"])
    _run_dir(tmp_path, "c", [json.dumps(_rec(0, 0.9)) + "\n"], done=False)
    (tmp_path / "not_a_run").mkdir()
    sweep = Sweep(str(tmp_path), workers=1)
    assert sweep.run_names == ["a", "b"]
    assert (sweep.n_skipped_lines, sweep.n_files_with_skips) == (3, 2)
    assert sweep.n_duplicates == 1 and sweep.n_incomplete == 1
    assert sweep.ckpts.n_unusable == 1
    assert len(sweep.ckpts) == 3
    np.testing.assert_allclose(sweep.ckpts.acc_in[:, 0], [0.5, 0.6, 0.7])   # last of step 0
    assert sweep.ckpts.meta["line"].tolist() == [1, 2, 0]
    assert sweep.ckpts.meta["run"].tolist() == [0, 0, 1]
    assert sweep.warnings() == [
        "warning: skipped 3 truncated or unreadable line(s) in 2 results.jsonl file(s)",
        "warning: dropped 1 duplicate-step record(s) (requeued runs); kept the last of each step",
        "warning: excluded 1 incomplete run(s) without a 'done' file; pass --include_incomplete "
        "to use them",
        "warning: ignored 1 record(s) whose args lack algorithm, dataset or test_envs (or a "
        "single_source run with more than one training domain)"]
    # the full record of a checkpoint row is re-read from its own line
    recs = sweep.records_at(np.array([0, 2]))
    assert recs[0]["env0_out_acc"] == 0.5 and recs[2]["env0_out_acc"] == 0.7
    assert set(recs) == {0, 2}
    assert sweep.keys == {f"env{i}_{s}_acc" for i in range(3) for s in ("in", "out")}
    # with --include_incomplete the third run comes in
    sweep = Sweep(str(tmp_path), include_incomplete=True, workers=1)
    assert sweep.run_names == ["a", "b", "c"] and sweep.n_incomplete == 0
    assert len(sweep.ckpts) == 4


def test_parallel_reader_gives_the_same_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(report_records, "PARALLEL_MIN_FILES", 2)
    _run_dir(tmp_path, "a", [json.dumps(_rec(0, 0.1)) + "\n", '{"st'])
    _run_dir(tmp_path, "b", [json.dumps(_rec(0, 0.2)) + "\n"] * 3)
    serial = Sweep(str(tmp_path), workers=1)
    parallel = Sweep(str(tmp_path), workers=2)
    for s in (serial, parallel):
        assert (s.n_skipped_lines, s.n_files_with_skips, s.n_duplicates) == (1, 1, 2)
        np.testing.assert_array_equal(s.ckpts.acc_in[:, 0], [0.1, 0.2])
    for k in range(38):                    # 40 files: chunks of 40 // (8 * 2) = 2 files
        _run_dir(tmp_path, f"r{k:02d}", [json.dumps(_rec(0, k / 100)) + "\n"])
    parallel = Sweep(str(tmp_path), workers=2)
    assert len(parallel.ckpts) == 40
    np.testing.assert_array_equal(parallel.ckpts.acc_in[2:, 0], np.arange(38) / 100)


def test_clean_sweep_has_no_warnings(tmp_path):
    _run_dir(tmp_path, "a", [json.dumps(_rec(0, 0.1)) + "\n"])
    assert Sweep(str(tmp_path), workers=1).warnings() == []


def test_read_jsonl_skips_and_counts(tmp_path):
    p = tmp_path / "results.jsonl"
    _write(p, ['{"step": 0}\n', "  \n", '{"st\n', '{"step": 1}\n', "[1]\n", "nul\n",
               '{"step": 2}\n', '{"step": 3, "x'])
    records, skipped = read_jsonl(str(p))
    assert records == [{"step": 0}, {"step": 1}, {"step": 2}]
    assert skipped == 4


def test_is_done(tmp_path):
    assert not is_done(str(tmp_path))
    (tmp_path / "done").write_text("done")
    assert is_done(str(tmp_path))


def test_sweep_counts_every_kind_of_left_out_record(tmp_path):
    (tmp_path / "0_not_a_run").mkdir()                  # sorts first; has no results.jsonl
    _run_dir(tmp_path, "a", [json.dumps(_rec(0, 0.1)) + "\n"])
    _run_dir(tmp_path, "b", [json.dumps(_rec(0, 0.2, {"dataset": "D"})) + "\n"])   # all unusable
    ss = {**ARGS, "task": "single_source", "test_envs": [0]}            # two training domains
    _run_dir(tmp_path, "c", [json.dumps(_rec(0, 0.3, ss)) + "\n"])
    _run_dir(tmp_path, "d", [json.dumps(_rec(0, 0.4)) + "\n"], done=False)
    _run_dir(tmp_path, "e", [json.dumps(_rec(0, 0.5)) + "\n"], done=False)
    sweep = Sweep(str(tmp_path), workers=1)
    assert sweep.run_names == ["a", "b", "c"] and sweep.n_incomplete == 2
    assert sweep.ckpts.n_unusable == 2 and len(sweep.ckpts) == 1
    assert sweep.keys == {f"env{i}_{s}_acc" for i in range(3) for s in ("in", "out")}


def test_missing_input_dir_message(tmp_path):
    try:
        Sweep(str(tmp_path / "nope"))
    except collect_results.ConfigError as e:
        assert str(e) == (f"--input_dir {str(tmp_path / 'nope')!r} is not a folder; pass the "
                          "sweep's output folder")
    else:
        raise AssertionError("no error")
