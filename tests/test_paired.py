"""Paired differences and their intervals (issue 18), pinned on hand-made records whose
answers are computed here by hand: a wrong pairing, a wrong t quantile or a sign flip fails."""
import json
import math
import os

import pytest

from domainbed_align import collect_results
from domainbed_align.lib.paired import (format_difference, pair_up, paired_difference,
                                        t_quantile)


def test_t_quantiles_are_students():
    # t_{0.975, df} from any table: df 1 -> 12.706, 2 -> 4.303, 4 -> 2.776, 9 -> 2.262
    for df, t in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622)):
        assert t_quantile(df) == pytest.approx(t, abs=1e-4)


def test_paired_difference_by_hand():
    d = paired_difference([0.05, 0.10, 0.02])
    mean = 0.17 / 3
    sd = math.sqrt(((0.05 - mean) ** 2 + (0.10 - mean) ** 2 + (0.02 - mean) ** 2) / 2)
    half = 4.302653 * sd / math.sqrt(3)
    assert (d.mean, d.n) == (pytest.approx(mean), 3)
    assert d.low == pytest.approx(mean - half, abs=1e-6)
    assert d.high == pytest.approx(mean + half, abs=1e-6)
    assert format_difference(d) == "+5.7 [-4.4, +15.7]"
    assert d.verdict == "no difference"                      # covers 0
    assert paired_difference([0.05, 0.06, 0.04]).verdict == "higher"
    assert paired_difference([-0.05, -0.06, -0.04]).verdict == "lower"
    one = paired_difference([0.3])
    assert one.n == 1 and math.isnan(one.low) and format_difference(one) == "+30.0 [n=1]"
    assert paired_difference([]) is None and format_difference(None) == "X"


def test_pair_up_names_the_unpaired_and_skips_missing_values():
    diffs, only_a, only_b = pair_up({(0, 3): 0.7, (1, 3): 0.8, (2, 3): float("nan"), (5, 3): 0.1},
                                    {(0, 3): 0.5, (1, 3): 0.9, (2, 3): 0.6, (4, 3): 0.2})
    assert diffs == [pytest.approx(0.2), pytest.approx(-0.1)]
    assert only_a == [(5, 3)] and only_b == [(2, 3), (4, 3)]


# ------------------------------------------------------------------ the collector, end to end
OOD = {"ERM": [0.50, 0.60, 0.70], "ALIGN": [0.55, 0.70, 0.72]}     # env3_in_acc per trial
IDTEST = {"ERM": [0.90, 0.80, 0.85], "ALIGN": [0.80, 0.82, 0.75]}  # every training domain


def _write_run(root, alg, trial, ood, idtest, out=0.95):
    args = {"algorithm": alg, "dataset": "SpuriousDigits", "test_envs": [3], "trial_seed": trial,
            "hparams_seed": 0, "task": "domain_generalization", "idtest_fraction": 0.2}
    rec = {"step": 0, "args": args, "env3_in_acc": ood, "env3_out_acc": ood}
    for j in range(3):
        rec[f"env{j}_in_acc"] = 0.99
        rec[f"env{j}_out_acc"] = out
        if idtest is not None:
            rec[f"env{j}_idtest_acc"] = idtest
    d = os.path.join(root, f"{alg}_{trial}")
    os.makedirs(d)
    with open(os.path.join(d, "results.jsonl"), "w") as f:
        f.write(json.dumps(rec) + "\n")
    open(os.path.join(d, "done"), "w").write("done")


@pytest.fixture
def hand_sweep(tmp_path):
    for alg in OOD:
        for trial in range(3):
            _write_run(str(tmp_path), alg, trial, OOD[alg][trial], IDTEST[alg][trial])
    _write_run(str(tmp_path), "ALIGN", 7, 0.99, 0.5)                # no ERM partner
    return str(tmp_path)


def _table(text, title_start):
    block = text[text.index("-------- " + title_start):].split("\n\n")[0]
    return [line.split("  ") for line in block.splitlines()[2:]]


def test_compare_to_prints_the_hand_computed_intervals(hand_sweep, capsys):
    assert collect_results.main(["--input_dir", hand_sweep, "--compare_to", "ERM", "--no_write",
                                 "--selection", "training_domain"]) == 0
    out = capsys.readouterr().out
    rows = _table(out, "Paired differences to ERM: SpuriousDigits")
    cells = [c.strip() for c in rows[0] if c.strip()]
    # OOD: diffs 0.05, 0.10, 0.02 (trial 7 has no ERM run: left out and named)
    # ID (ID test split): diffs -0.10, +0.02, -0.10 -> mean -0.06, sd 0.069282, n 3
    half = 4.302653 * 0.0692820 / math.sqrt(3)
    assert cells == ["ALIGN", "+5.7 [-4.4, +15.7]",
                     f"{-6.0:+.1f} [{100 * (-0.06 - half):+.1f}, {100 * (-0.06 + half):+.1f}]",
                     "3"]
    assert "ID: the ID test split" in out
    assert "unpaired, left out: ALIGN vs ERM" in out and "trial 7 test env 3" in out


def test_the_id_columns_use_the_id_test_split(hand_sweep, capsys):
    collect_results.main(["--input_dir", hand_sweep, "--no_write", "--selection",
                          "training_domain"])
    out = capsys.readouterr().out
    rows = _table(out, "Dataset: SpuriousDigits, model selection method: training-domain "
                       "validation set, ID training-domain accuracy on the ID test split")
    erm = [c.strip() for c in rows[0] if c.strip()]
    assert erm[0] == "ERM" and erm[4] == "85.0 +/- 2.4"     # mean of 0.90, 0.80, 0.85


def test_without_an_id_test_split_the_id_column_says_optimistic(tmp_path, capsys):
    for alg in OOD:
        for trial in range(3):
            _write_run(str(tmp_path), alg, trial, OOD[alg][trial], None, out=0.95)
    collect_results.main(["--input_dir", str(tmp_path), "--no_write", "--selection",
                          "training_domain"])
    out = capsys.readouterr().out
    rows = _table(out, "Dataset: SpuriousDigits, model selection method: training-domain "
                       "validation set, ID training-domain accuracy on the selection split "
                       "(optimistic)")
    assert [c.strip() for c in rows[0] if c.strip()][4] == "95.0 +/- 0.0"


def test_unknown_reference_is_one_error_line(hand_sweep, capsys):
    assert collect_results.main(["--input_dir", hand_sweep, "--compare_to", "ERN",
                                 "--no_write"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ERN" in err[0] and "ERM" in err[0]


def test_split_by_makes_variants_and_compares_within_each_algorithm(tmp_path, capsys):
    for trial, (on, off) in enumerate(((0.6, 0.5), (0.7, 0.65), (0.8, 0.7))):
        for value, acc in ((True, on), (False, off)):
            _write_run(str(tmp_path), "RES", trial, acc, 0.9)
            d = os.path.join(tmp_path, f"RES_{trial}")
            target = os.path.join(tmp_path, f"RES_{trial}_{value}")
            os.rename(d, target)
            path = os.path.join(target, "results.jsonl")
            rec = json.loads(open(path).read())
            rec["args"]["hparams"] = json.dumps({"res_target_rescale": value})
            open(path, "w").write(json.dumps(rec) + "\n")
    assert collect_results.main(["--input_dir", str(tmp_path), "--no_write", "--selection",
                                 "training_domain", "--split_by", "res_target_rescale",
                                 "--compare_to", "[res_target_rescale=true]"]) == 0
    out = capsys.readouterr().out
    rows = _table(out, "Paired differences to RES[res_target_rescale=true]")
    cells = [c.strip() for c in rows[0] if c.strip()]
    # off - on: -0.10, -0.05, -0.10: mean -8.3, sd 0.028868
    half = 4.302653 * 0.0288675 / math.sqrt(3)
    assert cells[0] == "RES[res_target_rescale=false]"
    assert cells[1] == f"-8.3 [{100 * (-0.25 / 3 - half):+.1f}, {100 * (-0.25 / 3 + half):+.1f}]"


def test_forest_plot_draws_the_same_intervals(hand_sweep, tmp_path, capsys):
    from domainbed_align import figures
    from domainbed_align.model_selection import get_selection_methods
    sweep = collect_results.Sweep(hand_sweep, use_cache=False)
    report = collect_results.Report(sweep, get_selection_methods(["training_domain"]), None,
                                    "text", ["ERM"])
    panels = figures.forest_points(report, "ERM")
    (label, ood), = panels["OOD accuracy (x100)"]
    assert label == "ALIGN" and ood.n == 3 and ood.mean == pytest.approx(0.17 / 3)
    assert panels["ID accuracy (x100)"][0][1].mean == pytest.approx(-0.06)
    out = tmp_path / "figs"
    assert collect_results.main(["--input_dir", hand_sweep, "--compare_to", "ERM", "--no_write",
                                 "--figures", str(out)]) == 0
    assert (out / "forest_ERM.png").stat().st_size > 1000


def test_forest_plot_labels_fit_and_do_not_cover_the_next_panel():
    """Long split_by labels (the mask-quality control's) once ran off the figure's left edge and
    over the second panel: every drawn row label lies inside the figure and left of its own
    axes, and with the same rows in both panels only the first names them."""
    from domainbed_align.report.draw import draw_forest
    long = [(f"GradMask[mask_quality={q}] - GradMask[mask_quality=gt]", paired_difference(v))
            for q, v in (("all_but_cue", [-0.2, -0.25, -0.1]), ("random", [0.02, 0.01, 0.03]))]
    fig = draw_forest({"OOD accuracy (x100)": long, "ID accuracy (x100)": long},
                      "[mask_quality=gt]")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width = fig.bbox.width
    first, second = fig.axes
    drawn = [t for t in first.get_yticklabels() if t.get_text()]
    assert [t.get_text() for t in drawn] == [f"{lab} (n=3)" for lab, _ in reversed(long)]
    assert not [t for t in second.get_yticklabels() if t.get_text()]
    box = first.get_window_extent(renderer)
    for t in drawn:
        ext = t.get_window_extent(renderer)
        assert 0 <= ext.x0 and ext.x1 <= box.x0 + 1 and ext.x1 <= width
