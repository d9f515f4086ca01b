"""collect_results: golden outputs, DomainBed byte layout, robustness, errors, no torch."""
import contextlib
import difflib
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from domainbed_align import collect_results

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import make_golden  # noqa: E402
from test_model_selection import reference_select  # noqa: E402

DATA = make_golden.DATA

# Upstream DomainBed's own domainbed/misc/results.txt: its output on a folder with no records.
UPSTREAM_EMPTY = (
    "Total records: 0\n\n"
    "-------- Averages, model selection method: training-domain validation set\n"
    "Algorithm                  Avg                       \n\n"
    "-------- Averages, model selection method: leave-one-domain-out cross-validation\n"
    "Algorithm                  Avg                       \n\n"
    "-------- Averages, model selection method: test-domain validation set (oracle)\n"
    "Algorithm                  Avg                       \n")


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = collect_results.main(argv)
    return rc, out.getvalue(), err.getvalue()


def assert_golden(actual, golden):
    with open(os.path.join(DATA, golden), encoding="utf-8") as f:
        expected = f.read()
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            f"tests/data/{golden}", "actual", n=1))
        pytest.fail(f"output differs from tests/data/{golden}:\n{diff[:6000]}\n"
                    f"If the change is intended, regenerate with: {make_golden.REGEN}")


@pytest.mark.parametrize("sweep,flags,golden", make_golden.CASES,
                         ids=[c[2] for c in make_golden.CASES])
def test_golden(sweep, flags, golden):
    if not os.path.isdir(os.path.join(DATA, sweep)):
        pytest.skip(f"tests/data/{sweep} not committed")
    assert_golden(make_golden.render(sweep, flags), golden)


def _load(sweep):
    recs = []
    for name in sorted(os.listdir(os.path.join(DATA, sweep))):
        path = os.path.join(DATA, sweep, name, "results.jsonl")
        if os.path.exists(path):
            with open(path) as f:
                recs += [json.loads(line) for line in f]
    return recs


def test_upstream_part_numbers_match_reference():
    """Every DomainBed table row of the upstream golden, recomputed from the reference."""
    recs = _load("upstream_sweep")
    with open(os.path.join(DATA, "upstream_sweep.golden.txt")) as f:
        golden = f.read()
    assert golden.startswith(f"Total records: {len(recs)}\n")
    envs = ["C", "L", "S", "V"]
    for key, name in (("iid", "training-domain validation set"),
                      ("loo", "leave-one-domain-out cross-validation"),
                      ("oracle", "test-domain validation set (oracle)")):
        sel = reference_select(recs, key)
        block = golden.split(f"-------- Dataset: VLCS, model selection method: {name}\n")[1]
        lines = block.split("\n")
        assert lines[0] == "".join(c.ljust(20) + "  " for c in ["Algorithm", *envs, "Avg"])[:-1]
        for alg, line in zip(["ERM", "MyPlugin"], lines[1:3]):
            cells, means = [alg], []
            for t in range(4):
                vals = [sel[(trial, "VLCS", alg, t)][2] for trial in (0, 1)]
                mean = 100 * np.mean(vals)
                err = 100 * np.std(np.array(vals) / np.sqrt(2))
                cells.append(f"{mean:.1f} +/- {err:.1f}")
                means.append(mean)
            cells.append(f"{sum(means) / 4:.1f}")
            assert line == "  ".join(c.ljust(20)[:20] for c in cells) + " "


def test_empty_sweep_is_byte_identical_to_upstream(tmp_path):
    (tmp_path / "not_a_run").mkdir()
    rc, out, err = run(["--input_dir", str(tmp_path)])
    assert rc == 0
    assert out == UPSTREAM_EMPTY
    assert "nothing to report" in err
    assert (tmp_path / "results.txt").read_text() == out      # tee, as upstream


def _copy(sweep, tmp_path):
    dst = tmp_path / "sweep"
    shutil.copytree(os.path.join(DATA, sweep), dst)
    return dst


def test_results_txt_tex_md_and_csv(tmp_path):
    d = _copy("metrics_sweep", tmp_path)
    rc, out, _ = run(["--input_dir", str(d), "--csv", str(tmp_path / "sel.csv")])
    assert rc == 0 and (d / "results.txt").read_text() == out
    rc, out, _ = run(["--input_dir", str(d), "--latex"])
    assert (d / "results.tex").read_text() == out and out.rstrip().endswith("\\end{document}")
    rc, out, _ = run(["--input_dir", str(d), "--markdown"])
    assert (d / "results.md").read_text() == out
    import pandas as pd
    csv = pd.read_csv(tmp_path / "sel.csv")
    assert set(csv["selection"]) == {"training_domain", "leave_one_out", "oracle"}
    assert {"ood_acc", "id_acc", "ood_comp", "id_suff", "run"} <= set(csv.columns)


def test_robust_to_truncation_duplicates_and_incomplete_runs(tmp_path):
    d = _copy("upstream_sweep", tmp_path)
    _, clean, _ = run(["--input_dir", str(d), "--no_write"])
    runs = sorted(p for p in d.iterdir() if p.is_dir())
    # a job killed while writing: half a line at the end
    with open(runs[0] / "results.jsonl", "a") as f:
        f.write('{"args": {"algorithm": "ERM", "dat')
    # an upstream requeue: the run's lines written again
    text = (runs[1] / "results.jsonl").read_text()
    (runs[1] / "results.jsonl").write_text(text + text)
    rc, out, err = run(["--input_dir", str(d), "--no_write"])
    assert rc == 0 and out == clean
    assert "skipped 1 truncated or unreadable line(s) in 1 results.jsonl file(s)" in err
    assert "dropped 4 duplicate-step record(s)" in err
    # a run without `done` is left out unless asked for
    (runs[2] / "done").unlink()
    rc, out, err = run(["--input_dir", str(d), "--no_write"])
    assert "excluded 1 incomplete run(s)" in err
    assert out.startswith("Total records: 316\n")
    rc, out, err = run(["--input_dir", str(d), "--no_write", "--include_incomplete"])
    assert out == clean and "incomplete" not in err


def test_missing_keys_and_unknown_dataset(tmp_path):
    run_dir = tmp_path / "r1"
    run_dir.mkdir()
    recs = [{"step": s, "env0_in_acc": 0.5, "env0_out_acc": 0.5, "env1_in_acc": 0.25,
             "env1_out_acc": 0.75, "args": {"algorithm": "New_Alg&Co", "dataset": "My_Data%",
                                            "test_envs": [0]}} for s in (0, 1)]
    recs.append({"step": 2, "args": {}})       # unplaceable record
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (run_dir / "done").write_text("done")
    rc, out, err = run(["--input_dir", str(tmp_path), "--no_write"])
    assert rc == 0
    assert "-------- Dataset: My_Data%, model selection method: training-domain" in out
    assert "Algorithm             env0                  env1                  Avg" in out
    assert "New_Alg&Co            50.0 +/- 0.0          X                     X" in out
    assert "ignored 1 record(s)" in err
    rc, out, err = run(["--input_dir", str(tmp_path), "--no_write", "--latex"])
    assert r"\subsubsection{My\_Data\%}" in out and r"New\_Alg\&Co" in out


@pytest.mark.parametrize("argv,message", [
    (["--input_dir", "/nonexistent/sweep"], "is not a folder"),
    (["--input_dir", DATA, "--selection", "best"], "unknown selection method 'best'"),
    (["--input_dir", DATA, "--metrics", "accuracy"], "unknown metric 'accuracy'"),
    (["--latex", "--markdown", "--input_dir", DATA], "not allowed with"),
    ([], "--input_dir"),
])
def test_user_errors_exit_2_with_one_line(argv, message):
    rc, out, err = run(argv)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_selection_and_metrics_flags():
    rc, out, _ = run(["--input_dir", os.path.join(DATA, "metrics_sweep"), "--no_write",
                      "--selection", "oracle", "--metrics", "comp,suff"])
    assert rc == 0
    assert "training-domain validation set" not in out
    assert "acc ↑                 comp ↑                suff ↓" in out
    assert "del ↓" not in out


def test_no_torch_import(tmp_path):
    """Tables and the sweep figures (tests/test_figures.py checks every figure kind)."""
    code = ("import sys; from domainbed_align import collect_results; "
            f"rc = collect_results.main(['--input_dir', {os.path.join(DATA, 'metrics_sweep')!r},"
            f" '--no_write', '--figures', {str(tmp_path / 'sel')!r}]) + collect_results.main("
            f"['--input_dir', {os.path.join(DATA, 'metrics_sweep')!r}, '--no_write', '--figures', "
            f"{str(tmp_path / 'grid')!r}, '--figures_vs', 'lr']); "
            "assert rc == 0; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "print('TORCH' if bad else 'NO_TORCH')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(HERE))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("NO_TORCH")
    assert sorted(os.listdir(tmp_path / "sel")) == ["comp_vs_suff.png", "ood_vs_id.png"]
    assert sorted(os.listdir(tmp_path / "grid")) == ["acc_vs_lr.png", "acc_vs_lr.txt"]
