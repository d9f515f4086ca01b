"""Sweep figures (collect_results --figures) and the saliency grid: the plotted numbers pinned to
their definitions on small hand-made sweeps, the rules (reference lines, random-search runs
ignored, categorical order, line splits), the files, the errors, and no torch."""
import contextlib
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_without_torch
from domainbed_align import collect_results as cr
from domainbed_align import figures
from domainbed_align.report import grid
from domainbed_align.lib.errors import ConfigError, DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def se(values):
    """Standard error as the tables compute it: population std / sqrt(n)."""
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values)) / math.sqrt(len(values))


def record(alg, test_env, trial, step=0, hseed=0, hparams=None, dataset="Toy", task=None,
           **values):
    """One results.jsonl record with args/hparams like the trainer's; `values` are env keys."""
    args = {"algorithm": alg, "dataset": dataset, "test_envs": [test_env], "trial_seed": trial,
            "hparams_seed": hseed, "task": task or "domain_generalization"}
    return {"args": args, "hparams": dict(hparams or {}), "step": step, **values}


def approx_points(points):
    return [pytest.approx(p) for p in points]


def write_run(root, name, records, done=True):
    d = root / name
    d.mkdir(parents=True)
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if done:
        (d / "done").write_text("done")
    return d


def run_main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cr.main(argv)
    return rc, out.getvalue(), err.getvalue()


# OOD test-domain accuracy, ID held-out accuracy and comp / suff on the test domain, per
# (algorithm, trial, test env) of a two-domain dataset: env{t}_in_* is the test domain,
# env{1-t}_out_acc the other domain's held-out split (ID).
SELECTED = {
    ("ERM", 0, 0): (0.50, 0.90, 0.10, 0.30), ("ERM", 0, 1): (0.70, 0.70, 0.20, 0.40),
    ("ERM", 1, 0): (0.40, 0.80, 0.30, 0.20), ("ERM", 1, 1): (0.60, 0.60, 0.10, 0.20),
    ("ERM", 2, 0): (0.90, 0.95, 0.05, 0.10), ("ERM", 2, 1): (0.50, 0.85, 0.15, 0.30),
    ("ALIGN", 0, 0): (0.55, 0.75, 0.40, 0.05), ("ALIGN", 0, 1): (0.65, 0.85, 0.30, 0.15),
}


def selected_sweep(root, with_metrics=True):
    """Two checkpoints per run: step 1 has the higher training-domain validation accuracy, so
    training-domain validation must select it (step 0 carries decoy values)."""
    for (alg, trial, t), (ood, idacc, comp, suff) in SELECTED.items():
        o = 1 - t
        recs = []
        for step, scale in ((0, 0.5), (1, 1.0)):
            v = {f"env{t}_in_acc": ood * scale, f"env{t}_out_acc": 0.0,
                 f"env{o}_in_acc": 0.99, f"env{o}_out_acc": idacc * scale}
            if with_metrics:
                v.update({f"env{t}_in_comp": comp * scale, f"env{t}_in_suff": suff * scale,
                          f"env{o}_out_comp": 0.0, f"env{o}_out_suff": 0.0,
                          f"env{t}_out_comp": 0.0, f"env{t}_out_suff": 0.0,
                          f"env{o}_in_comp": 0.0, f"env{o}_in_suff": 0.0})
            recs.append(record(alg, t, trial, step=step, **v))
        write_run(root, f"{alg}_t{trial}_e{t}", recs)


def test_selected_points_are_trial_means_of_the_selected_models(tmp_path):
    selected_sweep(tmp_path)
    sweep = cr.Sweep(str(tmp_path), workers=1, use_cache=False)
    rep = cr.Report(sweep, cr.get_selection_methods(["iid"]), None, "text")
    fig = figures.SweepFigures(sweep, rep)
    erm_ood = [(0.5 + 0.7) / 2, (0.4 + 0.6) / 2, (0.9 + 0.5) / 2]
    erm_id = [(0.9 + 0.7) / 2, (0.8 + 0.6) / 2, (0.95 + 0.85) / 2]
    x, xs, y, ys, n = fig.ood_id["Toy"]["ERM"]
    assert n == 3
    assert x == pytest.approx(sum(erm_id) / 3) and xs == pytest.approx(se(erm_id))
    assert y == pytest.approx(sum(erm_ood) / 3) and ys == pytest.approx(se(erm_ood))
    assert fig.ood_id["Toy"]["ALIGN"] == pytest.approx((0.8, 0.0, 0.6, 0.0, 1))
    assert list(fig.ood_id["Toy"]) == ["ERM", "ALIGN"]            # table order
    erm_comp = [0.15, 0.2, 0.1]
    erm_suff = [0.35, 0.2, 0.2]
    x, xs, y, ys, n = fig.comp_suff["Toy"]["ERM"]
    assert (x, xs, y, ys, n) == pytest.approx((sum(erm_suff) / 3, se(erm_suff),
                                               sum(erm_comp) / 3, se(erm_comp), 3))
    # the plotted OOD mean is the Avg column of the ID/OOD table (mean over domains of trial
    # means equals mean over trials of domain means when every cell is filled)
    text = rep.render()
    row = [ln for ln in text.splitlines() if ln.startswith("ERM") and "+/-" in ln]
    assert f"{100 * sum(erm_ood) / 3:.1f}" in row[0]


def test_main_writes_the_figures_and_skips_comp_suff_without_metrics(tmp_path):
    sweep = tmp_path / "sweep"
    selected_sweep(sweep, with_metrics=False)
    out = tmp_path / "figs"
    rc, text, err = run_main(["--input_dir", str(sweep), "--no_write", "--figures", str(out)])
    assert rc == 0 and text.startswith("Total records: 16\n")
    assert sorted(os.listdir(out)) == ["ood_vs_id.png"]
    assert (out / "ood_vs_id.png").stat().st_size > 0
    assert "note: comp_vs_suff.png skipped" in err
    assert "wrote 1 figure(s) into" in err


def test_main_without_figures_flag_does_not_import_matplotlib(tmp_path):
    selected_sweep(tmp_path)
    code = ("import sys; from domainbed_align import collect_results as c; "
            f"assert c.main(['--input_dir', {str(tmp_path)!r}, '--no_write']) == 0; "
            "print('MPL' if any(m.startswith('matplotlib') for m in sys.modules) else 'NO_MPL')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("NO_MPL")


# --------------------------------------------------------------------------------------------
# metric against an hparam
# --------------------------------------------------------------------------------------------

def mask_quality_records():
    """ERM over mask_quality (3 trials, trial 0 also on test env 1), ALIGN fixed (reference)."""
    recs = []
    acc = {("random", 0): 0.30, ("random", 1): 0.40, ("random", 2): 0.35,
           ("gt", 0): 0.80, ("gt", 1): 0.70, ("gt", 2): 0.90,
           ("dilated", 0): 0.60, ("dilated", 1): 0.65, ("dilated", 2): 0.50}
    for (q, trial), a in acc.items():                  # first seen: random, gt, dilated
        recs.append(record("ERM", 0, trial, step=5, hparams={"mask_quality": q, "lr": 0.001},
                           env0_in_acc=a, env1_in_acc=-1.0))
    # a second test domain for trial 0 at gt: averaged within the trial first
    recs.append(record("ERM", 1, 0, step=5, hparams={"mask_quality": "gt", "lr": 0.001},
                       env1_in_acc=0.60, env0_in_acc=-1.0))
    for trial, a in enumerate((0.55, 0.65, 0.60)):
        recs.append(record("ALIGN", 0, trial, step=5, hparams={"mask_quality": "gt", "lr": 0.001},
                           env0_in_acc=a))
    # random search: ignored with a warning
    recs.append(record("ERM", 0, 0, step=5, hseed=3, hparams={"mask_quality": "gt", "lr": 0.01},
                       env0_in_acc=0.0))
    return recs


def test_hparam_curve_points_mean_se_reference_and_order(capsys):
    pts = figures.hparam_curve_points(mask_quality_records(), "mask_quality")
    assert list(pts) == ["Toy"]
    erm = pts["Toy"]["ERM"]
    assert [p[0] for p in erm] == ["gt", "dilated", "random"]       # the hparam's own order
    gt = [(0.80 + 0.60) / 2, 0.70, 0.90]
    assert erm[0] == pytest.approx(("gt", sum(gt) / 3, se(gt), 3))
    assert erm[1] == pytest.approx(("dilated", (0.60 + 0.65 + 0.50) / 3, se([0.6, 0.65, 0.5]), 3))
    assert erm[2] == pytest.approx(("random", 0.35, se([0.3, 0.4, 0.35]), 3))
    # ALIGN: one value of mask_quality while ERM varies it -> a reference line
    assert list(pts["Toy"]) == ["ERM", "ALIGN (reference)"]
    assert pts["Toy"]["ALIGN (reference)"] == approx_points([("gt", 0.6, se([.55, .65, .6]), 3)])
    err = capsys.readouterr().err
    assert "warning: --figures_vs mask_quality: ignored 1 run(s) with hparams_seed != 0" in err


def test_categorical_values_without_a_known_order_are_sorted_and_numbers_are_numeric():
    recs = [record("ERM", 0, 0, hparams={"style": s}, env0_in_acc=0.5) for s in "cab"]
    assert [p[0] for p in figures.hparam_curve_points(recs, "style")["Toy"]["ERM"]] == \
        ["a", "b", "c"]
    recs = [record("ERM", 0, 0, hparams={"w": w}, env0_in_acc=w / 10) for w in (10, 2, 0.5)]
    pts = figures.hparam_curve_points(recs, "w")["Toy"]["ERM"]
    assert pts == approx_points([(0.5, 0.05, 0.0, 1), (2, 0.2, 0.0, 1),
                                (10, 1.0, 0.0, 1)])
    assert grid.axis_order([10, 2, 0.5], "w") == ([0.5, 2, 10], True)
    assert grid.axis_order([True, False], "b") == ([False, True], False)


def test_lines_split_by_the_other_varying_grid_hparams_and_other_metrics():
    recs = []
    for cue in ("patch", "background"):
        for agree in (0.9, 0.7):
            for trial in (0, 1):
                v = (0.5 if cue == "patch" else 0.8) - agree / 10 + trial / 100
                recs.append(record("ERM", 0, trial, hparams={"digits_cue": cue,
                                                            "cue_agreement": agree, "lr": 1e-3},
                                   env0_in_acc=v, env0_in_comp=2 * v))
    pts = figures.hparam_curve_points(recs, "cue_agreement")["Toy"]
    assert list(pts) == ["ERM, digits_cue=background", "ERM, digits_cue=patch"]
    bg = pts["ERM, digits_cue=background"]
    assert [p[0] for p in bg] == [0.7, 0.9]
    assert bg[0] == pytest.approx((0.7, 0.8 - 0.07 + 0.005, se([0.73, 0.74]), 2))
    comp = figures.hparam_curve_points(recs, "cue_agreement", "comp")["Toy"]
    assert comp["ERM, digits_cue=patch"][1][1] == pytest.approx(2 * (0.5 - 0.09 + 0.005))
    assert figures.grid_labels(recs, exclude=("cue_agreement", "digits_cue")) == ["ERM"] * 8


def test_every_line_fixed_draws_points_not_references():
    recs = [record(a, 0, 0, hparams={"q": q}, env0_in_acc=0.5)
            for a, q in (("ERM", "gt"), ("ALIGN", "random"))]
    assert figures.hparam_curve_points(recs, "q")["Toy"] == {
        "ERM": [("gt", 0.5, 0.0, 1)], "ALIGN": [("random", 0.5, 0.0, 1)]}
    recs[1]["hparams"] = {}                        # ALIGN has no such hparam: a category
    assert figures.hparam_curve_points(recs, "q")["Toy"]["ALIGN"] == [(None, 0.5, 0.0, 1)]


def test_an_algorithm_without_the_hparam_is_a_reference():
    recs = [record("ERM", 0, 0, hparams={"q": q}, env0_in_acc=a)
            for q, a in (("gt", 0.75), ("random", 0.25))]
    recs.append(record("ALIGN", 0, 0, hparams={"lr": 1}, env0_in_acc=0.5))
    pts = figures.hparam_curve_points(recs, "q")["Toy"]
    assert pts == {"ERM": [("gt", 0.75, 0.0, 1), ("random", 0.25, 0.0, 1)],
                   "ALIGN (reference)": [(None, 0.5, 0.0, 1)]}
    fig = figures.draw_hparam_curves({"Toy": pts}, "q", "acc")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["gt", "random"]


def test_unknown_hparam_is_one_error_line(tmp_path):
    write_run(tmp_path, "r0", [record("ERM", 0, 0, hparams={"lr": 1e-3}, env0_in_acc=0.5,
                                      env0_out_acc=0.5, env1_in_acc=0.5, env1_out_acc=0.5)])
    with pytest.raises(ConfigError, match="no record has hparam 'mask_qualty'; recorded "
                                          "hparams: lr"):
        figures.hparam_curve_points([record("ERM", 0, 0, hparams={"lr": 1})], "mask_qualty")
    for argv, message in (
            (["--figures", str(tmp_path / "f"), "--figures_vs", "mask_qualty"],
             "error: --figures_vs mask_qualty: no record has hparam 'mask_qualty'"),
            (["--figures_vs", "lr"], "error: --figures_vs and --figures_metric need --figures"),
            (["--figures", str(tmp_path / "f"), "--figures_metric", "accuracy"],
             "error: unknown metric 'accuracy'")):
        rc, out, err = run_main(["--input_dir", str(tmp_path), "--no_write", *argv])
        assert rc == 2 and out == "" and err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "f").exists()


# --------------------------------------------------------------------------------------------
# mask densities over training
# --------------------------------------------------------------------------------------------

def density_history(alg, trial, values, t=1, hparams=None):
    """values: {step: (strokes, cue, background)} on test env t's `in` split."""
    out = []
    for step, triple in values.items():
        r = record(alg, t, trial, step=step, hparams=hparams or {"align_l1": 0.1},
                   env0_in_acc=0.5, env0_out_acc=0.5, env1_in_acc=0.5, env1_out_acc=0.5)
        if triple is not None:
            for region, v in zip(figures.DENSITY_REGIONS, triple):
                r[f"env{t}_in_mask_density_{region}"] = v
                r[f"env{1 - t}_in_mask_density_{region}"] = 99.0      # not the test domain
        out.append(r)
    return out


def test_density_curve_points():
    nan = float("nan")
    hist = [density_history("ALIGN", 0, {0: (1.0, 2.0, 0.5), 10: (2.0, 1.0, 0.4)}),
            density_history("ALIGN", 1, {0: (3.0, nan, 0.7), 10: (2.5, 1.4, 0.6)}),
            density_history("ERM", 0, {0: None, 10: None}),           # no densities: left out
            density_history("ALIGN", 2, {0: (9.0, 9.0, 9.0)},
                            hparams={"align_l1": 0.1}) + []]
    hist[3][0]["args"]["hparams_seed"] = 1                           # random search: ignored
    pts = figures.density_curve_points(hist)
    assert list(pts) == ["Toy"] and list(pts["Toy"]) == ["ALIGN"]
    d = pts["Toy"]["ALIGN"]
    assert d["strokes"] == approx_points([(0, 2.0, se([1.0, 3.0]), 2),
                                          (10, 2.25, se([2.0, 2.5]), 2)])
    assert d["cue"] == approx_points([(0, 2.0, 0.0, 1), (10, 1.2, se([1.0, 1.4]), 2)])
    assert d["background"][1] == pytest.approx((10, 0.5, 0.1 / math.sqrt(2), 2))   # std 0.1


def test_density_lines_split_by_varying_hparams():
    hist = [density_history("ALIGN", 0, {0: (1.0, 1.0, 1.0)}, hparams={"align_l1": 0.1}),
            density_history("ALIGN", 0, {0: (2.0, 1.0, 1.0)}, hparams={"align_l1": 1.0})]
    pts = figures.density_curve_points(hist)["Toy"]
    assert list(pts) == ["ALIGN, align_l1=0.1", "ALIGN, align_l1=1"]
    assert pts["ALIGN, align_l1=1"]["strokes"] == [(0, 2.0, 0.0, 1)]


def full_sweep(root):
    """A mask_quality grid with comp/suff and densities: every sweep figure applies."""
    for rec in mask_quality_records():
        a = rec["args"]
        t = a["test_envs"][0]
        rec.update({f"env{i}_{s}_{m}": 0.5 for i in (0, 1) for s in ("in", "out")
                    for m in ("acc", "comp", "suff") if f"env{i}_{s}_{m}" not in rec})
        name = f"{a['algorithm']}_{rec['hparams']['mask_quality']}_{a['trial_seed']}_" \
               f"{t}_{a['hparams_seed']}"
        history = [rec]
        if a["algorithm"] == "ALIGN":
            history = density_history("ALIGN", a["trial_seed"], {0: (1.0, 2.0, 0.5),
                                                                 5: (2.0, 1.0, 0.4)}, t=t)
            for h in history:
                h["hparams"] = rec["hparams"]
                h.update({k: v for k, v in rec.items() if k.startswith("env") and k not in h})
        write_run(root, name, history)


def test_main_writes_every_sweep_figure(tmp_path):
    full_sweep(tmp_path / "sweep")
    out = tmp_path / "figs"
    rc, _, err = run_main(["--input_dir", str(tmp_path / "sweep"), "--no_write", "--figures",
                           str(out / "selection")])
    assert rc == 0, err
    assert sorted(os.listdir(out / "selection")) == ["comp_vs_suff.png", "ood_vs_id.png",
                                                     "over_training.png"]
    # --figures_vs marks a grid sweep: no selection figures (they would pick across the grid)
    rc, _, err = run_main(["--input_dir", str(tmp_path / "sweep"), "--no_write", "--figures",
                           str(out), "--figures_vs", "mask_quality", "lr"])
    assert rc == 0, err
    names = ["acc_vs_lr.png", "acc_vs_mask_quality.png", "over_training.png"]
    assert sorted(os.listdir(out)) == sorted(names + ["acc_vs_lr.txt", "acc_vs_mask_quality.txt",
                                                      "selection"])
    assert all((out / n).stat().st_size > 1000 for n in names)
    table = (out / "acc_vs_mask_quality.txt").read_text()
    assert table.startswith("# test-domain accuracy (%, higher is better) against mask_quality: "
                            "mean +/- standard")
    rc, _, err = run_main(["--input_dir", str(tmp_path / "sweep"), "--no_write", "--figures",
                           str(out), "--figures_vs", "mask_quality", "--figures_metric", "suff"])
    assert rc == 0 and (out / "suff_vs_mask_quality.png").stat().st_size > 1000


# --------------------------------------------------------------------------------------------
# saliency grid
# --------------------------------------------------------------------------------------------

def write_explanations(run_dir, n=4, mask=False, test_env=1, seed=0):
    rs = np.random.RandomState(seed)
    arrays = {"x": rs.randn(n, 3, 8, 8).astype(np.float16), "y": np.arange(n) % 3,
              "pred": np.zeros(n, dtype=np.int64), "cam": rs.rand(n, 2, 2).astype(np.float32),
              "gt": (rs.rand(n, 1, 8, 8) > 0.5).astype(np.uint8), "test_env": np.int64(test_env)}
    if mask:
        arrays["mask"] = rs.rand(n, 1, 8, 8).astype(np.float32)
    np.savez(run_dir / "explanations.npz", **arrays)


def saliency_sweep(root):
    for alg, trial, hseed, mask in (("ALIGN", 1, 0, True), ("ALIGN", 0, 2, True),
                                    ("ERM", 1, 0, False), ("ERM", 0, 0, False),
                                    ("DRE", 0, 0, False)):
        d = write_run(root, f"{alg}_{trial}_{hseed}", [record(alg, 1, trial, hseed=hseed)])
        write_explanations(d, mask=mask, seed=trial)
    write_run(root, "no_npz", [record("GRADIA", 1, 0)])


def test_saliency_picks_one_run_per_algorithm_in_table_order(tmp_path):
    saliency_sweep(tmp_path)
    runs = figures.find_explanations(str(tmp_path))
    assert [(lab, os.path.basename(os.path.dirname(p))) for lab, p in runs] == \
        [("ERM", "ERM_0_0"), ("DRE", "DRE_0_0"), ("ALIGN", "ALIGN_0_2")]   # same images
    runs = figures.find_explanations(str(tmp_path), ["ALIGN", "ERM"], trial_seed=0)
    assert [(lab, os.path.basename(os.path.dirname(p))) for lab, p in runs] == \
        [("ALIGN", "ALIGN_0_2"), ("ERM", "ERM_0_0")]
    rows = figures.saliency_rows(runs, k=3)
    assert [(lab, kind) for lab, kind, _ in rows] == \
        [("ALIGN", "cam"), ("ALIGN mask", "mask"), ("ERM", "cam")]
    ex = rows[0][2]
    assert ex["images"].shape == (3, 8, 8, 3) and ex["cam"].shape == (3, 2, 2)
    assert ex["images"].min(axis=(1, 2, 3)) == pytest.approx([0, 0, 0])   # per-image min-max
    assert ex["images"].max(axis=(1, 2, 3)) == pytest.approx([1, 1, 1])
    assert ex["cam"].max(axis=(1, 2)) == pytest.approx([1, 1, 1])
    fig = figures.draw_saliency(rows)
    assert len(fig.axes) == 3 * 3 + 2                   # images, then two colour bars


def test_saliency_cli_writes_a_png(tmp_path):
    saliency_sweep(tmp_path / "sweep")
    out = tmp_path / "f" / "saliency.png"
    assert figures.main(["saliency", "--input_dir", str(tmp_path / "sweep"), "--out", str(out),
                         "--k", "3"]) == 0
    assert out.stat().st_size > 1000
    rows = figures.saliency_figure(str(tmp_path / "sweep"), str(out), ["ERM"], k=2)
    assert rows == 1


@pytest.mark.parametrize("argv,message", [
    (["saliency", "--input_dir", "/nonexistent", "--out", "x.png"], "is not a folder"),
    (["saliency", "--out", "x.png"], "--input_dir"),
    (["saliency", "--input_dir", "SWEEP", "--out", "x.png", "--algorithms", "GRADIA"],
     "has explanations.npz"),
    (["saliency", "--input_dir", "SWEEP", "--out", "x.png", "--k", "0"], "--k 0"),
])
def test_saliency_errors_are_one_line(tmp_path, capsys, argv, message):
    saliency_sweep(tmp_path / "sweep")
    argv = [str(tmp_path / "sweep") if a == "SWEEP" else a for a in argv]
    assert figures.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_bad_explanations_file_is_a_data_error(tmp_path):
    d = write_run(tmp_path, "r", [record("ERM", 1, 0)])
    np.savez(d / "explanations.npz", x=np.zeros((1, 3, 4, 4)))
    with pytest.raises(DataError, match="lacks y, pred, cam"):
        figures.saliency_rows(figures.find_explanations(str(tmp_path)))


def test_figures_never_import_torch(tmp_path):
    full_sweep(tmp_path / "sweep")
    saliency_sweep(tmp_path / "sal")
    run_without_torch(
        "from domainbed_align import collect_results, figures; "
        f"assert collect_results.main(['--input_dir', {str(tmp_path / 'sweep')!r}, "
        f"'--no_write', '--figures', {str(tmp_path / 'f')!r}, '--figures_vs', "
        "'mask_quality']) == 0; "
        f"assert figures.main(['saliency', '--input_dir', {str(tmp_path / 'sal')!r}, "
        f"'--out', {str(tmp_path / 'f' / 's.png')!r}]) == 0")
    assert sorted(os.listdir(tmp_path / "f")) == ["acc_vs_mask_quality.png",
                                                   "acc_vs_mask_quality.txt",
                                                   "over_training.png", "s.png"]


def test_last_records_and_history_follow_the_collector_on_requeued_files(tmp_path):
    recs = [record("ALIGN", 0, 0, step=s, env0_in_acc=a, env0_out_acc=a, env1_in_acc=a,
                   env1_out_acc=a) for s, a in ((0, 0.1), (5, 0.2), (5, 0.3))]
    d = write_run(tmp_path, "r", recs)
    with open(d / "results.jsonl", "a") as f:
        f.write('{"step": 9, "args": {"algor')                      # killed mid-write
    write_run(tmp_path, "s", recs[:1])
    sweep = cr.Sweep(str(tmp_path), workers=1, use_cache=False)
    assert {k: v["env0_in_acc"] for k, v in sweep.last_records().items()} == \
        {0: 0.3, 1: 0.1}                                    # a requeued step: the last written
    assert [r["env0_in_acc"] for r in sweep.history(0)] == [0.1, 0.3]


def test_unwritable_figures_folder_keeps_the_tables(tmp_path):
    selected_sweep(tmp_path / "sweep")
    (tmp_path / "taken").write_text("a file, not a folder")
    rc, out, err = run_main(["--input_dir", str(tmp_path / "sweep"), "--figures",
                             str(tmp_path / "taken")])
    assert rc == 2 and out.startswith("Total records: 16\n")
    assert (tmp_path / "sweep" / "results.txt").read_text() == out
    assert err.splitlines()[-1].startswith(f"error: could not write figures into "
                                           f"{tmp_path / 'taken'}: ")


def test_saliency_filters_on_hparam_values(tmp_path):
    for name, cue in (("a", "patch"), ("b", "background")):
        d = write_run(tmp_path, name, [record("ERM", 1, 0, hparams={"digits_cue": cue,
                                                                      "cue_agreement": 0.8})])
        write_explanations(d)
    pick = lambda **hp: [os.path.basename(os.path.dirname(p)) for _, p in  # noqa: E731
                         figures.find_explanations(str(tmp_path), hparams=hp)]
    assert pick() == ["a"]                              # ties: folder name
    assert pick(digits_cue="background") == ["b"]
    assert figures.parse_hparam_filters(["digits_cue=background", "cue_agreement=0.8",
                                         "digits_spurious=false"]) == \
        {"digits_cue": "background", "cue_agreement": 0.8, "digits_spurious": False}
    with pytest.raises(ConfigError, match="write NAME=VALUE"):
        figures.parse_hparam_filters(["digits_cue"])


def test_combined_axis_over_two_hparams():
    recs = [record("ERM", 1, t, hparams={"digits_cue": cue, "digits_spurious": sp},
                   env1_in_acc=acc)
            for t, cue, sp, acc in ((0, "patch", True, 0.6), (1, "patch", True, 0.8),
                                    (0, "patch", False, 0.9), (0, "background", True, 0.4))]
    curves = figures.hparam_curve_points(recs, "digits_cue+digits_spurious")["Toy"]
    assert list(curves) == ["ERM"]                      # both names left out of the label
    assert curves["ERM"] == approx_points([
        ("digits_cue=background, digits_spurious=True", 0.4, 0.0, 1),
        ("digits_cue=patch, digits_spurious=False", 0.9, 0.0, 1),
        ("digits_cue=patch, digits_spurious=True", 0.7, se([0.6, 0.8]), 2)])
    table = figures.hparam_curve_table({"Toy": curves}, "digits_cue+digits_spurious", "acc")
    assert "  ERM  digits_cue=patch, digits_spurious=True   70.0 +/-  7.1  (n=2)" in table


def test_learning_curve_points_follow_their_definition(tmp_path):
    hist = [dict(record("ERM", 2, 0, step=s), env0_out_acc=a, env1_out_acc=b, env2_out_acc=0.0,
                 env0_in_acc=0.0, env1_in_acc=0.0, env2_in_acc=c)
            for s, a, b, c in ((0, 0.1, 0.3, 0.05), (100, 0.8, 0.9, 0.5))]
    pts = figures.learning_curve_points(hist)
    assert pts["train_val"] == approx_points([(0, 0.2), (100, 0.85)])  # mean of envs 0 and 1
    assert pts["test"] == [(0, 0.05), (100, 0.5)]                       # env 2's `in` split
    write_run(tmp_path / "curves", "ERM", hist)
    assert figures.learning_curves_figure(str(tmp_path / "curves"), str(tmp_path / "c.png")) == 1
    assert (tmp_path / "c.png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="holds no run folder"):
        figures.learning_curves_figure(str(tmp_path), str(tmp_path / "d.png"))
