"""The collector's small pieces on hand-checked inputs: orders, names, cells, headings, CSV."""
import json
import math

import numpy as np
import pandas as pd

from domainbed_align import catalog, collect_results as cr
from domainbed_align import model_selection as ms
from domainbed_align.report import names, selected


def test_our_datasets_are_placed_after_their_predecessor(monkeypatch):
    monkeypatch.setattr(catalog, "DATASET_ENVIRONMENTS", {
        "First": ("a",), "Debug28": ("0",), "A": ("x",), "VLCS": ("C",), "B": ("y",), "C": ("z",)})
    upstream = list(cr.UPSTREAM_DATASET_ENVIRONMENTS)
    expected = ["Debug28", "A"] + upstream[1:4] + ["VLCS", "B", "C"] + upstream[5:] + ["First"]
    assert names.known_datasets() == expected
    assert cr.dataset_order(["zz", "C", "VLCS", "aa", "First", "Debug28"]) == \
        ["Debug28", "VLCS", "C", "First", "aa", "zz"]


def test_environment_names(monkeypatch):
    monkeypatch.setattr(catalog, "DATASET_ENVIRONMENTS", {"Mine": ("p", "q"), "VLCS": ("c",)})
    assert cr.environment_names("Mine", 5) == ["p", "q"]
    assert cr.environment_names("VLCS", 4) == ["c"]                  # ours before upstream's
    assert cr.environment_names("PACS", 4) == ["A", "C", "P", "S"]
    assert cr.environment_names("Unknown", 3) == ["env0", "env1", "env2"]


def test_numbers_and_means():
    for bad in (None, True, False, "x", [1]):
        assert math.isnan(selected.num(bad))
    assert selected.num("0.25") == 0.25 and selected.num(3) == 3.0
    assert math.isnan(selected.nanmean([])) and math.isnan(selected.nanmean([float("nan")]))
    assert selected.nanmean([1.0, float("nan"), 2.0]) == 1.5
    assert selected.mean_over(np.array([1.0, 2.0, 4.0, 8.0]), 3, 1) == 2.5
    assert selected.finite([1, None, float("nan"), 2.5]) == [1.0, 2.5]


def test_index_selection_sorts_by_trial_then_domain():
    sel = pd.DataFrame({"dataset": ["D"] * 4, "algorithm": ["E"] * 4, "trial_seed": [1, 0, 1, 0],
                        "test_env": [0, 2, 1, 0], "v": [1, 2, 3, 4]})
    idx = cr.index_selection(sel)
    assert [(r["trial_seed"], r["test_env"], r["v"]) for r in idx["D", "E"]] == \
        [(0, 0, 4), (0, 2, 2), (1, 0, 1), (1, 1, 3)]
    ss = pd.DataFrame({"dataset": ["D"] * 3, "algorithm": ["E"] * 3, "trial_seed": [0] * 3,
                       "source": [2, 0, 1]})
    assert [r["source"] for r in cr.index_selection(ss)["D", "E"]] == [0, 1, 2]
    none = pd.DataFrame({"dataset": ["D"] * 2, "algorithm": ["E"] * 2, "trial_seed": [0, 0],
                         "v": [2, 1]})
    assert [r["v"] for r in cr.index_selection(none)["D", "E"]] == [2, 1]   # stable


def _report(tmp_path, fmt="text", methods=None, metrics=None):
    d = tmp_path / "run0"
    d.mkdir()
    recs = []
    for step in (0, 1):
        r = {"step": step, "args": {"algorithm": "ERM", "dataset": "Debug28", "test_envs": [0],
                                    "trial_seed": 0, "hparams_seed": 0}}
        for i in range(3):
            r.update({f"env{i}_in_acc": 0.5 + step / 4, f"env{i}_out_acc": 0.25 + step / 4,
                      f"env{i}_in_comp": 0.1 * (i + 1), f"env{i}_out_comp": 0.2 * (i + 1)})
        recs.append(r)
    # an undecodable byte on a skipped line must not stop the lazy re-read
    (d / "results.jsonl").write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in recs)
                                      + b'{"step": 9, "x": "\xff\n')
    (d / "done").write_text("done")
    sweep = cr.Sweep(str(tmp_path), workers=1)
    return cr.Report(sweep, ms.SELECTION_METHODS if methods is None else methods, metrics, fmt)


def test_metric_columns_and_csv_frame(tmp_path):
    rep = _report(tmp_path)
    assert rep.metrics == ["acc", "comp"]
    iid = rep.selections[ms.IIDAccuracySelectionMethod]
    assert iid[["step", "ood_acc", "id_acc", "ood_comp", "id_comp"]].to_dict("records") == \
        [{"step": 1, "ood_acc": 0.75, "id_acc": 0.5, "ood_comp": 0.1, "id_comp": 0.5}]
    csv = rep.csv_frame()
    assert list(csv.columns[:2]) == ["selection", "trial_seed"] and csv.columns[-1] == "run"
    assert csv["selection"].tolist() == ["training_domain", "oracle"]     # no pair runs: no LOO
    assert csv["run"].tolist() == ["run0", "run0"] and list(csv.index) == [0, 1]
    assert "row" not in csv.columns and "test_acc" not in csv.columns
    assert rep.sweep.n_skipped_lines == 1


def test_report_without_methods_has_an_empty_csv(tmp_path):
    rep = _report(tmp_path, methods=[])
    assert rep.csv_frame().empty
    assert rep.render().startswith("Total records: 2\n")


def test_headings_per_format(tmp_path):
    expected = {
        "text": ["\n======== T\n", "\n==== T\n", "\n==== T\n"],
        "markdown": ["\n## T\n", "\n### T\n", "\n#### T\n"],
        "latex": ["\n\\section{T}\n", "\n\\subsection{T}\n", "\n\\subsubsection{T}\n"],
    }
    rep = _report(tmp_path)
    for fmt, lines in expected.items():
        rep.fmt, rep.out = fmt, []
        for level in (1, 2, 3):
            rep.heading("T", level)
        assert [rep._text(b) for b in rep.out] == lines, fmt
    rep.fmt, rep.out = "latex", []
    rep.heading("a_b", 1)
    assert [rep._text(b) for b in rep.out] == ["\n\\section{a\\_b}\n"]


def test_parse_metrics():
    assert cr.parse_metrics(None) is None and cr.parse_metrics([]) is None
    assert cr.parse_metrics(["comp,,suff", " pg "]) == ["comp", "suff", "pg"]
    try:
        cr.parse_metrics(["comp,accuracy"])
    except cr.ConfigError as e:
        assert str(e) == f"unknown metric 'accuracy'; known: {', '.join(cr.METRICS)}"
    else:
        raise AssertionError("no error")


def test_metrics_flag_always_shows_accuracy_first(tmp_path, capsys):
    _report(tmp_path)                                   # writes the one-run sweep
    assert cr.main(["--input_dir", str(tmp_path), "--no_write", "--metrics", "comp",
                    "--selection", "oracle"]) == 0
    out = capsys.readouterr().out
    assert "Algorithm             acc ↑                 comp ↑               \n" in out


def test_main_outputs_csv_timing_and_unwritable_results(tmp_path, capsys):
    _report(tmp_path)
    (tmp_path / "results.txt").mkdir()                  # results.txt cannot be written
    csv = tmp_path / "sel.csv"
    assert cr.main(["--input_dir", str(tmp_path), "--csv", str(csv)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "warning: skipped 1 truncated or unreadable line(s) in 1 results.jsonl file(s)"
    assert err[1].startswith(f"warning: could not write results.txt into {tmp_path}: ")
    seconds = err[2].split(" in ")[1]
    assert err[2].startswith("collected 2 records from 1 runs in ") and seconds.endswith(" s")
    assert 0 <= float(seconds[:-2]) < 60
    assert csv.read_text().splitlines()[0].startswith("selection,trial_seed,dataset,")


def test_single_source_table_of_an_unknown_dataset(tmp_path, capsys):
    d = tmp_path / "run"
    d.mkdir()
    r = {"step": 0, "args": {"algorithm": "ERM", "dataset": "Mine", "test_envs": [1],
                             "trial_seed": 0, "hparams_seed": 0, "task": "single_source"}}
    r.update({"env0_in_acc": 0.5, "env0_out_acc": 0.25, "env1_in_acc": 0.75, "env1_out_acc": 1.0})
    (d / "results.jsonl").write_text(json.dumps(r) + "\n")
    (d / "done").write_text("done")
    assert cr.main(["--input_dir", str(tmp_path), "--no_write", "--selection", "iid"]) == 0
    out = capsys.readouterr().out
    assert "Source                env0                  env1                  ID" in out
    assert "env0                  -                     75.0 +/- 0.0          25.0 +/- 0.0" in out
