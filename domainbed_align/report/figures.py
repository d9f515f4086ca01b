"""The sweep figures of `collect_results --figures DIR` (and of the HTML page).

Each figure is built in two steps: a data function returns the plotted points (tested on
hand-made records), a draw function (`draw`) turns them into a PNG. Points are mean +/-
standard error over trial seeds with the tables' formula (`lib.tables.format_mean`), so a
figure and its table agree. Only domain-generalisation runs are drawn.

A partial sweep must not mislead: a selected-model point exists only where the table's Avg
does (every test domain has a selected model) and is averaged over the trials that have every
test domain; the others are named under the panel as incomplete.
"""
import os
from typing import Dict, List, Sequence, Tuple

from domainbed_align.lib.misc import atomic_open
from domainbed_align.report.comparisons import forest_points
from domainbed_align.report.draw import (draw_densities, draw_forest, draw_hparam_curves,
                                         draw_selected, save_figure)
from domainbed_align.report.grid import (density_curve_points, hparam_curve_points,
                                         hparam_curve_table, run_keys, warn)
from domainbed_align.report.names import environment_names, metric_label
from domainbed_align.report.selected import mean_se, missing_envs, trial_means

Selected = Dict[str, Dict[str, Tuple[float, float, float, float, int]]]


def selected_points(index: Dict[tuple, List[dict]], datasets: Sequence[str],
                    algorithms: Sequence[str], x_col: str, y_col: str,
                    n_envs: Dict[str, int]) -> Tuple[Selected, Dict[str, List[str]]]:
    """(points, left_out): points[dataset][algorithm] = (x, x_se, y, y_se, n_trials) of the
    selected models; left_out[dataset] = lines naming the algorithms left out, and why.

    `index` is the selection index ((dataset, algorithm) -> selected rows, one per trial and
    test domain). A point needs every test domain 0..n_envs-1 on both axes (else the table's
    Avg is X); each trial with every test domain is averaged over them, then mean +/- s.e.
    over those trials.
    """
    out: Selected = {}
    left_out: Dict[str, List[str]] = {}
    for ds in datasets:
        pts, notes = {}, []
        n = n_envs[ds]
        envs = environment_names(ds, n)
        for alg in algorithms:
            if not index.get((ds, alg)):
                continue
            missing = sorted(set(missing_envs(index, x_col, ds, alg, n)) |
                             set(missing_envs(index, y_col, ds, alg, n)))
            x, x_se, nx = mean_se(trial_means(index, x_col, ds, alg, n))
            y, y_se, ny = mean_se(trial_means(index, y_col, ds, alg, n))
            if missing:
                notes.append(f"{alg}: no test domain {', '.join(envs[e] for e in missing)}")
            elif nx and ny:
                pts[alg] = (x, x_se, y, y_se, min(nx, ny))
            else:
                notes.append(f"{alg}: no trial has every test domain")
        if pts or notes:
            out[ds] = pts
        if notes:
            left_out[ds] = notes
    return out, left_out


class SweepFigures:
    """The data of every sweep figure, gathered before the tables are printed (so a bad
    `--figures_vs` is one error line), drawn after they are written."""

    def __init__(self, sweep, report, vs: Sequence[str] = (), metric: str = "acc"):
        iid = report.methods[0]
        idx = report.index[iid]
        self.metric = metric
        self.notes: List[str] = []
        self.left_out: Dict[str, Dict[str, List[str]]] = {}
        # --figures_vs marks a grid sweep (hparams_seed 0 for every variant): model selection
        # would pick across grid points, so the selection figures are left out
        self.ood_id, self.comp_suff = {}, None
        if not vs:
            self.ood_id, self.left_out["ood_vs_id"] = selected_points(
                idx, report.datasets, report.algorithms, "id_acc", "ood_acc", report.n_envs)
        if {"comp", "suff"} <= set(report.metrics) and not vs:
            self.comp_suff, self.left_out["comp_vs_suff"] = selected_points(
                idx, report.datasets, report.algorithms, "ood_suff", "ood_comp",
                report.n_envs)
            self.comp_suff = self.comp_suff or None
        if self.comp_suff is None and not vs:
            self.notes.append("note: comp_vs_suff.png skipped: the records carry no "
                              "comprehensiveness/sufficiency (explain_n 0?)")
        for name, lines in self.left_out.items():
            for ds, why in lines.items():
                self.notes.append(f"note: {name}.png, {ds}: not drawn (incomplete): "
                                  + "; ".join(why))
        self.forest = {ref: forest_points(report, ref) for ref in report.compare_to}
        has_density = any("_mask_density_" in k for k in sweep.keys)
        lasts = sweep.last_records() if (vs or has_density) else {}
        self.vs = {h: hparam_curve_points(list(lasts.values()), h, metric) for h in vs}
        self.density = {}
        if has_density:
            runs = [run for run, r in lasts.items() if run_keys(r) is not None and
                    any("_mask_density_" in k for k in r)]
            self.density = density_curve_points([sweep.history(run) for run in runs])

    def write(self, out_dir: str) -> List[str]:
        os.makedirs(out_dir, exist_ok=True)
        paths = []
        if self.ood_id:
            paths.append(save_figure(draw_selected(
                self.ood_id, "ID accuracy, training domains' held-out splits (%)",
                "OOD accuracy, test domain (%)",
                "Selected models (training-domain validation)\nmean ± s.e. over trials",
                diagonal=True, left_out=self.left_out.get("ood_vs_id")),
                os.path.join(out_dir, "ood_vs_id.png")))
        if self.comp_suff:
            paths.append(save_figure(draw_selected(
                self.comp_suff, "sufficiency AOPC, test domain (x100, lower is better)",
                "comprehensiveness AOPC, test domain (x100, higher is better)",
                "Selected models (training-domain validation)\nmean ± s.e. over trials",
                left_out=self.left_out.get("comp_vs_suff")),
                os.path.join(out_dir, "comp_vs_suff.png")))
        for hparam, curves in self.vs.items():
            if not curves:
                warn(f"note: {self.metric}_vs_{hparam}.png skipped: no run records "
                     f"{self.metric} on its test domain")
                continue
            paths.append(save_figure(
                draw_hparam_curves(curves, hparam, metric_label(self.metric), scale=100.0),
                os.path.join(out_dir, f"{self.metric}_vs_{hparam}.png")))
            text = os.path.join(out_dir, f"{self.metric}_vs_{hparam}.txt")
            with atomic_open(text, "w", fsync=False) as f:
                f.write(hparam_curve_table(curves, hparam, metric_label(self.metric)))
            paths.append(text)
        for ref, panels in self.forest.items():
            if panels:
                safe = "".join(c if c.isalnum() or c in "-_=" else "_" for c in ref).strip("_")
                paths.append(save_figure(draw_forest(panels, ref),
                                         os.path.join(out_dir, f"forest_{safe}.png")))
        if self.density:
            paths.append(save_figure(draw_densities(self.density),
                                     os.path.join(out_dir, "over_training.png")))
        for note in self.notes:
            warn(note)
        return paths
