"""The report's rules that keep figures and tables from misleading, on hand-checked cases:
points only where every test domain is there, curves labelled by what a run is, explanation
tables that fit a page with a direction on every column, CSV integers, shared saliency
images."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from domainbed_align import collect_results as cr
from domainbed_align.report import curves, figures, saliency, tables
from domainbed_align.report.selected import trial_means

DATA = os.path.join(os.path.dirname(__file__), "data")


def rows(*entries):
    """Selection-index rows (trial, test env, ood, id) for one (dataset, algorithm)."""
    return [{"trial_seed": t, "test_env": e, "ood_acc": o, "id_acc": i} for t, e, o, i in entries]


def test_a_point_needs_every_test_domain_and_uses_complete_trials_only():
    idx = {
        # trial 0 complete (ood 0.2, 0.4, 0.6 -> 0.4); trial 1 lacks domain 1: left out
        ("D", "ERM"): rows((0, 0, 0.2, 0.5), (0, 1, 0.4, 0.5), (0, 2, 0.6, 0.5),
                           (1, 0, 0.9, 0.9), (1, 2, 0.9, 0.9)),
        # no run on the hard domain 2: no point (the table's Avg is X), named instead
        ("D", "ALIGN"): rows((0, 0, 0.9, 0.5), (0, 1, 0.9, 0.5)),
        # every domain present but never in one trial: no complete trial, no point
        ("D", "DRE"): rows((0, 0, 0.5, 0.5), (0, 1, 0.5, 0.5), (1, 2, 0.5, 0.5)),
    }
    pts, left_out = figures.selected_points(idx, ["D"], ["ERM", "ALIGN", "DRE"], "id_acc",
                                            "ood_acc", {"D": 3})
    assert pts == {"D": {"ERM": pytest.approx((0.5, 0.0, 0.4, 0.0, 1))}}
    assert left_out == {"D": ["ALIGN: no test domain env2", "DRE: no trial has every test domain"]}
    # the averaging the tables use for their Averages table keeps every trial
    assert trial_means(idx, "ood_acc", "D", "ERM") == pytest.approx([0.4, 0.9])
    assert trial_means(idx, "ood_acc", "D", "ERM", 3) == pytest.approx([0.4])


def test_selected_figure_names_what_it_left_out(tmp_path):
    from domainbed_align.report.draw import draw_selected
    fig = draw_selected({"D": {}}, "x", "y", "t", left_out={"D": ["ALIGN: no test domain 2"]})
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["not drawn (incomplete):\nALIGN: no test domain 2"]


def last(alg, test_env, trial=0, dataset="SpuriousDigits", **hparams):
    return {"args": {"algorithm": alg, "dataset": dataset, "test_envs": [test_env],
                     "trial_seed": trial, "hparams_seed": 0}, "hparams": hparams, "step": 9}


def test_curve_labels_say_algorithm_test_domain_and_differing_hparams():
    recs = [last("ERM", 3, batch_size=64, lr=1e-3), last("ERM", 3, batch_size=16, lr=1e-3),
            last("ALIGN", 3, lr=1e-3), last("GRADIA", 0, trial=0), last("GRADIA", 0, trial=1)]
    names = ["ERM", "ERM_batch16", "ALIGN", "g0", "g1"]
    assert curves.run_labels(recs, names) == [
        "ERM, test gradient, batch_size=64", "ERM, test gradient, batch_size=16",
        "ALIGN, test gradient", "GRADIA, test plain, trial 0", "GRADIA, test plain, trial 1"]
    # identical runs in two folders: the folder tells them apart
    assert curves.run_labels([last("X", 0, dataset="U"), last("X", 0, dataset="U")],
                             ["a", "b"]) == ["X, test 0 (a)", "X, test 0 (b)"]


def test_explanation_tables_fit_a_page_with_a_direction_on_every_column(capsys):
    assert tables.column_parts(list("abcdefghi"), 4) == [list("abcd"), list("efgh"), ["i"]]
    assert cr.main(["--input_dir", os.path.join(DATA, "tiny_sweep"), "--no_write",
                    "--no_cache", "--selection", "iid"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    headers = [lines[i + 1] for i, line in enumerate(lines)
               if line.startswith("-------- Explanations:")]
    part = "\n".join(lines[i + k] for i, line in enumerate(lines)
                     if line.startswith("-------- Explanations:") for k in range(4))
    assert len(headers) == 2 * 4                      # 15 metrics -> 4 parts, test and ID
    for h in headers:
        cells = [c for c in h.split("  ") if c.strip()][1:]
        assert all(c.strip()[-1] in "↑↓·" for c in cells), h
    assert max(len(line) for line in part.splitlines() if not line.startswith("-")) <= 120
    assert "(part 4 of 4)" in part and "mask_area ·" in part


def test_csv_keeps_integers(tmp_path, capsys):
    csv = tmp_path / "sel.csv"
    # tiny_sweep has no pair runs for some selections: empty frames must not turn ints to floats
    assert cr.main(["--input_dir", os.path.join(DATA, "tiny_sweep"), "--no_write", "--no_cache",
                    "--csv", str(csv)]) == 0
    frame = pd.read_csv(csv)
    for col in ("trial_seed", "test_env", "hparams_seed", "step"):
        assert frame[col].dtype == np.int64, col
    text = csv.read_text().splitlines()
    header = text[0].split(",")
    step = header.index("step")
    assert all("." not in line.split(",")[step] for line in text[1:])


def test_csv_frame_of_an_empty_selection_concatenated_stays_integer():
    sel = pd.DataFrame({"trial_seed": [0], "dataset": ["D"], "algorithm": ["E"], "test_env": [1],
                        "hparams_seed": [2], "step": [300], "row": [0], "val_acc": [0.5],
                        "test_acc": [0.5]})
    empty = pd.DataFrame({c: [] for c in sel.columns})
    assert pd.concat([sel, empty])["step"].dtype != np.int64        # the trap
    fake = type("S", (), {})()
    fake.selections = {type("M", (), {"key": "a"}): sel, type("N", (), {"key": "b"}): empty}
    fake.sweep = type("W", (), {"run_names": ["run0"]})()
    fake.ckpts = type("C", (), {"meta": pd.DataFrame({"run": [0]})})()
    frame = cr.Report.csv_frame(fake)
    assert frame["step"].tolist() == [300] and frame["step"].dtype == np.int64


def test_shared_images_key_prefers_what_most_algorithms_have():
    runs = {"ERM": [((0, 0), (False, 0, "e"), "p"), ((1, 0), (False, 0, "e1"), "p")],
            "ALIGN": [((1, 0), (True, 3, "a"), "p")],
            "DRE": [((1, 0), (False, 0, "d"), "p"), ((0, 1), (False, 0, "d1"), "p")]}
    assert saliency.shared_images_key(runs) == (1, 0)
    # a tie on coverage: more hparams_seed 0 runs, then the smallest key
    assert saliency.shared_images_key({"A": [((2, 0), (True, 1, "x"), "p"),
                                             ((3, 0), (False, 0, "y"), "p")]}) == (3, 0)
    assert saliency.shared_images_key({"A": [((2, 0), (False, 0, "x"), "p"),
                                             ((1, 5), (False, 0, "y"), "p")]}) == (1, 5)


def test_saliency_warns_when_rows_show_other_images(tmp_path, capsys):
    for name, seed in (("a", 0), ("b", 1)):
        d = tmp_path / name
        d.mkdir()
        rec = {"step": 0, "args": {"algorithm": name.upper(), "dataset": "D", "test_envs": [0],
                                   "trial_seed": 0, "hparams_seed": 0}, "hparams": {}}
        (d / "results.jsonl").write_text(json.dumps(rec) + "\n")
        rs = np.random.RandomState(seed)
        np.savez(d / "explanations.npz", x=rs.rand(2, 1, 4, 4), y=np.zeros(2, int),
                 pred=np.zeros(2, int), cam=rs.rand(2, 2, 2))
    rows = saliency.saliency_rows(saliency.find_explanations(str(tmp_path)), k=2)
    assert len(rows) == 2
    assert "row 'B' shows other images than row 'A'" in capsys.readouterr().err


def test_upsample_and_overlay_by_hand():
    cam = np.array([[0.0, 1.0], [2.0, 3.0]])
    up = saliency.upsample(cam, 4, 4)
    # pixel centres at 0.5, 1.5, ... of 4 map to -0.25, 0.25, 0.75, 1.25 of 2: clamped, then linear
    assert up[:, 0] == pytest.approx([0.0, 0.5, 1.5, 2.0])
    assert up[0] == pytest.approx([0.0, 0.25, 0.75, 1.0])
    assert saliency.upsample(cam, 2, 2) == pytest.approx(cam)
    gray = lambda v: np.stack([v, v, v, np.ones_like(v)], axis=-1)   # noqa: E731
    out = saliency.overlay(np.zeros((2, 2, 3)), np.array([[0.0, 1.0], [0.5, 0.2]]), gray)
    assert np.allclose(out[..., 0], [[0.0, 0.5], [0.25, 0.1]])


@pytest.mark.parametrize("kinds", [["cam", "mask"], ["cam", "mask", "cam", "mask", "cam", "mask"]])
def test_saliency_colour_bars_never_overlap(kinds):
    """One bar per kind of row; with several masked algorithms the kinds interleave, and a bar
    beside rows 0, 2, 4 and one beside rows 1, 3, 5 used to be drawn over each other."""
    rs = np.random.RandomState(0)
    ex = {"images": rs.rand(2, 4, 4, 3), "cam": rs.rand(2, 2, 2), "mask": rs.rand(2, 4, 4),
          "gt": None, "y": np.zeros(2, int), "pred": np.zeros(2, int)}
    fig = saliency.draw_saliency([(f"row {i}", kind, ex) for i, kind in enumerate(kinds)])
    fig.canvas.draw()
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2
    a, b = (ax.get_window_extent() for ax in bars)
    assert a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0, (a, b)
