"""The sweep page (collect_results --html) and its run list, without a browser: job states
from files, every image the page names exists, no network address, same tables as the text
report, readable files, no torch. tests/test_report_browser.py opens it in Chromium."""
import json
import os
import re
import shutil

import numpy as np

from conftest import run_without_torch
from domainbed_align import collect_results as cr
from domainbed_align.report import runs

DATA = os.path.join(os.path.dirname(__file__), "data")


def make_run(root, name, records=(), done=False, **files):
    d = root / name
    d.mkdir(parents=True)
    if records:
        (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if done:
        (d / "done").write_text("done")
    for fname, text in files.items():
        (d / fname.replace("_txt", ".txt")).write_text(text)
    return d


REC = {"step": 0, "args": {"algorithm": "ERM", "dataset": "Debug28", "test_envs": [1],
                           "trial_seed": 2, "hparams_seed": 3}}
TRACEBACK = ("warning: something harmless\nTraceback (most recent call last):\n"
             '  File "x.py", line 1, in <module>\nValueError: loss is NaN at step 7\n')


def test_run_states_from_files(tmp_path):
    make_run(tmp_path, "a_done", [REC, {**REC, "step": 5}], done=True)
    make_run(tmp_path, "b_traceback", [REC], err_txt=TRACEBACK)
    make_run(tmp_path, "c_error_file", [REC], error_txt="error: no data at /x\n",
             err_txt="Traceback\nKeyError: hidden\n")
    make_run(tmp_path, "d_warnings_only", [REC], err_txt="warning: slow\nstep 3\n")
    make_run(tmp_path, "e_running", [REC], running="host 1\n")
    make_run(tmp_path, "f_error_line", err_txt="error: unknown algorithm 'ALGN'; known: ERM\n")
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "g_half_line").mkdir()
    (tmp_path / "g_half_line" / "results.jsonl").write_text(
        json.dumps({**REC, "step": 4}) + "\n" + '{"step": 8, "args": {')
    got = {r.name: (r.state, r.detail, r.last_step) for r in runs.run_states(str(tmp_path))}
    assert got == {
        "a_done": ("done", "", 5),
        "b_traceback": ("failed", "ValueError: loss is NaN at step 7", 0),
        "c_error_file": ("failed", "error: no data at /x", 0),     # error.txt wins
        "d_warnings_only": ("incomplete", "", 0),
        "e_running": ("incomplete", "running marker present", 0),
        "f_error_line": ("failed", "error: unknown algorithm 'ALGN'; known: ERM", None),
        "g_half_line": ("incomplete", "", 4),
    }
    order = [r.name for r in runs.run_states(str(tmp_path))]
    assert order[:3] == ["b_traceback", "c_error_file", "f_error_line"]   # failed first
    r = runs.run_state(str(tmp_path / "a_done"))
    assert (r.algorithm, r.dataset, r.test_envs, r.trial_seed, r.hparams_seed) == \
        ("ERM", "Debug28", "1", 2, 3)


def add_explanations(run_dir, seed=0):
    rs = np.random.RandomState(seed)
    np.savez(run_dir / "explanations.npz", x=np.arange(4 * 3 * 8 * 8).reshape(4, 3, 8, 8) % 7,
             y=np.arange(4) % 3, pred=np.zeros(4, dtype=np.int64), cam=rs.rand(4, 2, 2),
             test_env=np.int64(0))


def page_sweep(root):
    """tiny_sweep plus a failed run and explanations.npz in its test-domain-0 runs."""
    sweep = root / "sweep"
    shutil.copytree(os.path.join(DATA, "tiny_sweep"), sweep)
    for name in sorted(os.listdir(sweep)):
        path = sweep / name / "results.jsonl"
        if path.exists():
            args = json.loads(path.read_text().splitlines()[0])["args"]
            if args["test_envs"] == [0]:
                add_explanations(sweep / name)
    make_run(sweep, "zz_failed", [REC], err_txt=TRACEBACK)
    return sweep


def build_page(tmp_path, *extra):
    sweep = page_sweep(tmp_path)
    out = tmp_path / "page"
    assert cr.main(["--input_dir", str(sweep), "--no_write", "--no_cache", "--html", str(out),
                    *extra]) == 0
    return sweep, out


def test_page_holds_every_table_image_and_the_failing_run(tmp_path, capsys):
    sweep, out = build_page(tmp_path)
    text = capsys.readouterr().out
    page = (out / "index.html").read_text(encoding="utf-8")
    titles = re.findall(r"^-------- (.*)$", text, flags=re.M)
    assert re.findall(r'data-title="([^"]*)"', page) == [
        t.replace("&", "&amp;").replace("'", "&#x27;") for t in titles]
    images = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(images) == sorted(["ood_vs_id.png", "comp_vs_suff.png",
                                     "saliency_Debug28.png", "curves_Debug28.png"])
    assert all((out / name).stat().st_size > 1000 for name in images)
    assert not re.search(r"(https?:)?//[a-z]", page.replace("file://", "")), "a network address"
    assert "ValueError: loss is NaN at step 7" in page and "<h3>Failing runs</h3>" in page
    n_runs = sum(1 for n in os.listdir(sweep) if (sweep / n).is_dir())
    assert f"{n_runs} run folders: <b>{n_runs - 1}</b> done" in page
    umask = os.umask(0)
    os.umask(umask)
    assert all(os.stat(out / n).st_mode & 0o777 == 0o666 & ~umask for n in os.listdir(out))


def test_page_escapes_names(tmp_path):
    sweep = tmp_path / "s"
    rec = {"step": 0, "args": {"algorithm": "<b>Bad&Name", "dataset": "D\"x", "test_envs": [0],
                               "trial_seed": 0, "hparams_seed": 0},
           "env0_in_acc": 0.5, "env0_out_acc": 0.5, "env1_in_acc": 0.5, "env1_out_acc": 0.5}
    make_run(sweep, "r", [rec], done=True)
    assert cr.main(["--input_dir", str(sweep), "--no_write", "--no_cache", "--html",
                    str(tmp_path / "p")]) == 0
    page = (tmp_path / "p" / "index.html").read_text(encoding="utf-8")
    assert "<b>Bad" not in page and "&lt;b&gt;Bad&amp;Name" in page
    assert os.path.exists(tmp_path / "p" / "curves_D_x.png")


def test_html_needs_no_torch(tmp_path):
    sweep = page_sweep(tmp_path)
    res = run_without_torch("from domainbed_align import collect_results; "
                            f"assert collect_results.main(['--input_dir', {str(sweep)!r}, "
                            f"'--no_write', '--html', {str(tmp_path / 'p')!r}]) == 0")
    assert re.search(r"wrote \S+index.html in \d+\.\d\d s", res.stderr)


def test_page_shows_paired_comparisons(tmp_path, capsys):
    _, out = build_page(tmp_path, "--compare_to", "ERM", "--selection", "iid")
    text = capsys.readouterr().out
    page = (out / "index.html").read_text(encoding="utf-8")
    titles = re.findall(r"^-------- (Paired differences to ERM.*)$", text, flags=re.M)
    assert titles and all(f'data-title="{t}"' in page for t in titles)
    assert '<img src="forest_ERM.png"' in page and (out / "forest_ERM.png").exists()
