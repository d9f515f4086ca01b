"""Sweep-level figures (`collect_results --figures DIR`) and a saliency grid from explanations.npz.

    python -m domainbed_align.collect_results --input_dir SWEEP --figures DIR
        [--figures_vs HPARAM ...] [--figures_metric acc]
    python -m domainbed_align.figures saliency --input_dir SWEEP --out FILE [--algorithms ...]

Each figure is built in two steps: a data function returns the plotted points (tested on
hand-made records), a draw function turns them into a PNG. Points are mean +/- standard error
over trial seeds with the tables' formula (`lib.tables.format_mean`), so a figure and its table
agree. Only domain-generalisation runs are drawn; single-source runs are left out with a note.

Never imports torch (it runs on a login node next to the collector); matplotlib is imported only
when a figure is drawn, on its Agg canvas (no pyplot, no display).
"""
import argparse
import json
import math
import os
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from domainbed_align.collect_results import (METRICS, _ArgumentError, _Parser, _trial_means,
                                             algorithm_order, dataset_order, parse_line)
from domainbed_align.lib.errors import ConfigError, DataError, DomainBedAlignError
from domainbed_align.lib.misc import atomic_open
from domainbed_align.lib.tables import format_mean
from domainbed_align.model_selection import SINGLE_SOURCE, run_meta

# Regions of the learned-mask density keys env{i}_in_mask_density_<region> (1 = uniform mass).
DENSITY_REGIONS = ("strokes", "cue", "background")
REFERENCE = " (reference)"       # label suffix of an algorithm drawn as a horizontal line
EXPLANATIONS_FILE = "explanations.npz"
PANEL_IN = 4.0                   # inches per panel side
MAX_PANELS_PER_ROW = 3
MAX_LINES = 20                   # more lines than this in one panel: not a grid (warning)
FONT_PT = 8

# Categorical hparams whose values have a natural order (otherwise values are sorted).
HPARAM_VALUE_ORDER = {
    "mask_quality": ("gt", "dilated", "shifted", "partial", "random"),
}

Point = Tuple[object, float, float, int]       # (x, mean, se, n)


def mean_se(values: Sequence[float]) -> Tuple[float, float, int]:
    """(mean, standard error, n) of the finite values; the tables' formula. NaN when none."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return float("nan"), float("nan"), 0
    mean, se, _ = format_mean(vals, scale=1.0)
    return float(mean), float(se), len(vals)


def _warn(text: str):
    print(text, file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Selected models: OOD vs ID, comprehensiveness vs sufficiency
# --------------------------------------------------------------------------------------------

def selected_points(index: Dict[tuple, List[dict]], datasets: Sequence[str],
                    algorithms: Sequence[str], x_col: str, y_col: str
                    ) -> Dict[str, Dict[str, Tuple[float, float, float, float, int]]]:
    """dataset -> algorithm -> (x, x_se, y, y_se, n_trials) of the selected models.

    `index` is the collector's selection index ((dataset, algorithm) -> selected rows, one per
    trial and test domain, with columns such as ood_acc / id_acc / ood_comp). Each trial is
    first averaged over its test domains, then mean +/- s.e. over trials. Algorithms with no
    finite value on either axis are left out.
    """
    out: Dict[str, Dict[str, tuple]] = {}
    for ds in datasets:
        pts = {}
        for alg in algorithms:
            x, x_se, nx = mean_se(_trial_means(index, x_col, ds, alg))
            y, y_se, ny = mean_se(_trial_means(index, y_col, ds, alg))
            if nx and ny:
                pts[alg] = (x, x_se, y, y_se, min(nx, ny))
        if pts:
            out[ds] = pts
    return out


# --------------------------------------------------------------------------------------------
# Grid sweeps: a metric against one hparam, mask densities over training
# --------------------------------------------------------------------------------------------

def _key(value) -> str:
    return json.dumps(value, sort_keys=True)


def _fmt_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _meta(record: dict) -> Optional[dict]:
    """The collector's run keys of a record plus its first test domain, or None."""
    m = run_meta(record.get("args"))
    if m is not None:
        m["test_env"] = m["test_envs"][0]
    return m


def grid_records(records: Sequence[dict], what: str) -> List[dict]:
    """The records of a fixed-hparam grid: hparams_seed 0, domain generalisation.

    Runs with hparams_seed != 0 are random search, not a grid point: left out with a warning.
    """
    kept, n_random, n_ss = [], 0, 0
    for r in records:
        m = _meta(r)
        if m is None:
            continue
        if m["task"] == SINGLE_SOURCE:
            n_ss += 1
        elif m["hparams_seed"] != 0:
            n_random += 1
        else:
            kept.append(r)
    if n_random:
        _warn(f"warning: {what}: ignored {n_random} run(s) with hparams_seed != 0 (random "
              "search, not a grid); grid sweeps use hparams_seed 0")
    if n_ss:
        _warn(f"note: {what}: left out {n_ss} single-source run(s) (domain generalisation only)")
    return kept


def grid_labels(records: Sequence[dict], exclude: Sequence[str] = ()) -> List[str]:
    """Line label of each run: its algorithm plus the grid hparams that vary between runs of
    that algorithm (on the same dataset), e.g. "ERM, digits_cue=background"."""
    groups: Dict[tuple, List[int]] = defaultdict(list)
    for i, r in enumerate(records):
        m = _meta(r)
        groups[m["dataset"], m["algorithm"]].append(i)
    labels = [""] * len(records)
    for (_, alg), idx in groups.items():
        values: Dict[str, set] = defaultdict(set)
        for i in idx:
            hp = records[i].get("hparams") or {}
            for name, v in hp.items():
                values[name].add(_key(v))
        names = set(values)
        for i in idx:                    # a name some runs lack varies too
            names_i = set(records[i].get("hparams") or {})
            for name in names - names_i:
                values[name].add(_key(None))
        varying = sorted(n for n, vs in values.items() if len(vs) > 1 and n not in exclude)
        for i in idx:
            hp = records[i].get("hparams") or {}
            labels[i] = alg + "".join(f", {n}={_fmt_value(hp.get(n))}" for n in varying)
    return labels


def _axis_order(values: Sequence[object], hparam: str) -> Tuple[List[object], bool]:
    """Distinct x values in axis order and whether the axis is numeric."""
    distinct = list({_key(v): v for v in values}.values())
    if distinct and all(_is_number(v) for v in distinct):
        return sorted(distinct), True
    known = [v for v in HPARAM_VALUE_ORDER.get(hparam, ()) if _key(v) in
             {_key(d) for d in distinct}]
    rest = sorted((v for v in distinct if _key(v) not in {_key(k) for k in known}), key=str)
    return known + rest, False


def _label_order(labels: Sequence[str]) -> List[str]:
    algs = algorithm_order([lab.split(",")[0].replace(REFERENCE, "") for lab in labels])
    return sorted(set(labels), key=lambda lab: (
        algs.index(lab.split(",")[0].replace(REFERENCE, "")), lab))


def hparam_curve_points(records: Sequence[dict], hparam: str, metric: str = "acc"
                        ) -> Dict[str, Dict[str, List[Point]]]:
    """dataset -> line label -> [(x, mean, se, n)] for a grid sweep over `hparam`.

    `records`: the LAST record of each run (one per run, with "args" and "hparams"). y is
    env{t}_in_<metric> with t the run's first test domain; at each x, each trial seed's runs
    are averaged (several test domains), then mean +/- s.e. over trial seeds. A line whose runs
    all share one value of `hparam` (or lack it) while another line of the dataset varies it is
    a reference: label "<name> (reference)", one point. Runs with hparams_seed != 0 are
    ignored (warning).
    """
    names = hparam.split("+")  # "a+b": one categorical axis over both (a grid of variants)
    for name in names:
        if not any(name in (r.get("hparams") or {}) for r in records):
            known = sorted({k for r in records for k in (r.get("hparams") or {})})
            raise ConfigError(f"--figures_vs {hparam}: no record has hparam {name!r}; recorded "
                              f"hparams: {', '.join(known) or 'none'}")
    kept = grid_records(records, f"--figures_vs {hparam}")
    labels = grid_labels(kept, exclude=names)
    by_ds: Dict[str, Dict[str, Dict[str, Dict[int, list]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    x_values: Dict[str, Dict[str, object]] = defaultdict(dict)
    for r, label in zip(kept, labels):
        m = _meta(r)
        hp = r.get("hparams") or {}
        x = hp.get(hparam) if len(names) == 1 else \
            ", ".join(f"{n}={_fmt_value(hp.get(n))}" for n in names)
        y = r.get(f"env{m['test_env']}_in_{metric}")
        x_values[m["dataset"]][_key(x)] = x
        by_ds[m["dataset"]][label][_key(x)][m["trial_seed"]].append(y)
    out: Dict[str, Dict[str, List[Point]]] = {}
    for ds in dataset_order(list(by_ds)):
        lines = by_ds[ds]
        some_line_varies = any(len(per_x) > 1 for per_x in lines.values())
        # runs that lack the hparam (x None) are a category only where no line varies it
        order, _ = _axis_order([v for v in x_values[ds].values()
                                if v is not None or not some_line_varies], hparam)
        curves: Dict[str, List[Point]] = {}
        for label in _label_order(list(lines)):
            per_x = lines[label]
            reference = some_line_varies and len(per_x) == 1
            xs = [x_values[ds][k] for k in per_x] if reference else order
            points = []
            for x in xs:
                trials = per_x.get(_key(x), {})
                means = [mean_se(trials[t])[0] for t in sorted(trials)]
                mean, se, n = mean_se(means)
                if n:
                    points.append((x, mean, se, n))
            if points:
                curves[label + (REFERENCE if reference else "")] = points
        if len(curves) > MAX_LINES:
            _warn(f"warning: --figures_vs {hparam}: {len(curves)} lines on {ds}: its runs "
                  "differ in other hparams too (a grid sweep varies a few, with hparams_seed 0)")
        if curves:
            out[ds] = curves
    return out


def hparam_curve_table(curves, hparam: str, y_label: str, scale: float = 100.0) -> str:
    """The numbers behind a `<metric>_vs_<hparam>` figure, one row per line and value."""
    rows = [f"# {y_label} against {hparam}: mean +/- standard error over trials (n runs)"]
    for ds, lines in curves.items():
        rows.append(f"\n{ds}")
        width = max(len(label) for label in lines)
        for label, pts in lines.items():
            for x, mean, se, n in pts:
                where = f"{hparam}={_fmt_value(x)}" if "+" not in hparam else str(x)
                rows.append(f"  {label:<{width}}  {where:<24} "
                            f"{scale * mean:6.1f} +/- {scale * se:4.1f}  (n={n})")
    return "\n".join(rows) + "\n"


def density_curve_points(histories: Sequence[Sequence[dict]]
                         ) -> Dict[str, Dict[str, Dict[str, List[Tuple[int, float, float, int]]]]]:
    """dataset -> line label -> region -> [(step, mean, se, n_runs)] of the learned mask's
    density (mass share / area share) on each run's test domain `in` split.

    `histories`: every record of each run, in step order. Runs without density keys are left
    out; NaN (a region absent from the images) is skipped. Labels as in `hparam_curve_points`.
    """
    lasts = [h[-1] for h in histories if h]
    wanted = {id(r) for r in grid_records(lasts, "over_training")}
    runs = [h for h in histories if h and id(h[-1]) in wanted and _has_density(h)]
    labels = grid_labels([h[-1] for h in runs])
    acc: Dict[str, Dict[str, Dict[str, Dict[int, list]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for h, label in zip(runs, labels):
        m = _meta(h[-1])
        for r in h:
            step = r.get("step")
            if step is None:
                continue
            for region in DENSITY_REGIONS:
                v = r.get(f"env{m['test_env']}_in_mask_density_{region}")
                if v is not None and math.isfinite(float(v)):
                    acc[m["dataset"]][label][region][int(step)].append(float(v))
    out = {}
    for ds in dataset_order(list(acc)):
        out[ds] = {}
        for label in _label_order(list(acc[ds])):
            out[ds][label] = {region: [(s, *mean_se(vals)) for s, vals in
                                       sorted(acc[ds][label][region].items())]
                              for region in DENSITY_REGIONS if acc[ds][label][region]}
    return out


def _has_density(history: Sequence[dict]) -> bool:
    t = _meta(history[-1])["test_env"]
    return any(f"env{t}_in_mask_density_{region}" in r for r in history
               for region in DENSITY_REGIONS)


# --------------------------------------------------------------------------------------------
# Reading a sweep through the collector
# --------------------------------------------------------------------------------------------

def _read_lines(path: str, wanted: Sequence[int]) -> List[dict]:
    """The records on the given line indices of one results.jsonl, in that order. Reads the
    file once and parses only those lines (parsing is the collector's cost; a sweep's files
    are never all held in memory)."""
    want = set(int(i) for i in wanted)
    found = {}
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            if i in want:
                found[i] = parse_line(line) or {}
                if len(found) == len(want):
                    break
    return [found.get(int(i), {}) for i in wanted]


def last_records(sweep) -> Dict[int, dict]:
    """Run index -> the last record of that run, read through the collector's `Sweep`."""
    meta = sweep.ckpts.meta
    if not len(meta):
        return {}
    last = meta.groupby("run", sort=True).tail(1)
    return {int(run): _read_lines(sweep.results_path(int(run)), [line])[0]
            for run, line in zip(last["run"], last["line"])}


def run_history(sweep, run: int) -> List[dict]:
    """Every record of one run, in step order (one per step, as the tables use them)."""
    meta = sweep.ckpts.meta
    lines = meta["line"].to_numpy()[meta["run"].to_numpy() == run]
    return _read_lines(sweep.results_path(run), lines)


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------

def _colours(names: Sequence[str]) -> Dict[str, tuple]:
    from matplotlib import colormaps
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _figure(n_panels: int, width: float = PANEL_IN, height: float = PANEL_IN):
    """A figure with one axes per panel (at most three per row), on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    cols = max(1, min(n_panels, MAX_PANELS_PER_ROW))
    rows = max(1, math.ceil(n_panels / cols))
    fig = Figure(figsize=(width * cols, height * rows), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(max(n_panels, 1))]
    return fig, axes


def save_figure(fig, path: str) -> str:
    """Write a PNG atomically (a reader never sees half a file)."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


_LABEL_OFFSETS = ((4, 4), (4, -11), (-4, 4), (-4, -11), (4, 14), (4, -21), (-4, 14), (-4, -21))


def _place_labels(ax, items):
    """Annotate points [(text, x, y, colour)], each at the first offset whose (estimated) text
    box overlaps no label placed before it, so close algorithms stay readable."""
    ax.figure.canvas.draw()       # settle the layout so data -> pixel transforms hold
    pt = ax.figure.dpi / 72.0
    placed = []
    for text, x, y, colour in items:
        px, py = ax.transData.transform((x, y))
        w, h = 0.6 * FONT_PT * len(text) * pt, FONT_PT * pt
        for dx, dy in _LABEL_OFFSETS:
            left = px + dx * pt - (w if dx < 0 else 0)
            box = (left, py + dy * pt, left + w, py + dy * pt + h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                       for b in placed):
                break
        placed.append(box)
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                    ha="left" if dx >= 0 else "right", fontsize=FONT_PT, color=colour)


def draw_selected(points, x_label: str, y_label: str, title: str, scale: float = 100.0,
                  diagonal: bool = False):
    """One panel per dataset: a labelled point per algorithm with s.e. bars on both axes."""
    fig, axes = _figure(len(points))
    algs = algorithm_order([a for pts in points.values() for a in pts])
    colours = _colours(algs)
    for ax, (ds, pts) in zip(axes, points.items()):
        for alg, (x, xs, y, ys, n) in pts.items():
            ax.errorbar(scale * x, scale * y, xerr=scale * xs, yerr=scale * ys, fmt="o",
                        color=colours[alg], capsize=3, ms=5)
        xlim, ylim = ax.get_xlim(), ax.get_ylim()
        if diagonal and max(xlim[0], ylim[0]) < min(xlim[1], ylim[1]):   # crosses the view
            lo, hi = min(xlim[0], ylim[0]), max(xlim[1], ylim[1])
            ax.plot([lo, hi], [lo, hi], ls=":", color="#888888", lw=0.8, label="OOD = ID")
            ax.set_xlim(xlim)            # the diagonal must not widen the points' view
            ax.set_ylim(ylim)
            ax.legend(fontsize=FONT_PT, loc="best")
        ax.set_title(f"{ds}", fontsize=FONT_PT + 1)
        ax.set_xlabel(x_label, fontsize=FONT_PT)
        ax.set_ylabel(y_label, fontsize=FONT_PT)
        ax.tick_params(labelsize=FONT_PT)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=FONT_PT + 1)
    for ax, pts in zip(axes, points.values()):
        _place_labels(ax, [(alg, scale * p[0], scale * p[2], colours[alg])
                           for alg, p in pts.items()])
    return fig


def forest_points(report, reference: str):
    """{panel title: [(row label, PairedDifference)]} for one `--compare_to` reference: OOD and
    ID accuracy of every other algorithm minus the reference, training-domain validation."""
    from domainbed_align.collect_results import compare_column, comparison_rows
    idx = report.index[report.methods[0]]
    panels = {}
    for col, what in (("ood_acc", "OOD accuracy"), ("id_acc", "ID accuracy")):
        rows = []
        for ds in report.datasets:
            for ref, algs in comparison_rows(idx, ds, report.algorithms, reference):
                for alg in algs:
                    diff = compare_column(idx, ds, alg, ref, col)[0]
                    if diff is not None:
                        label = alg if len(report.datasets) == 1 else f"{ds}: {alg}"
                        rows.append((label if reference == ref else f"{label} - {ref}", diff))
        panels[f"{what} (x100)"] = rows
    return panels if any(panels.values()) else {}


def draw_forest(panels, reference: str, scale: float = 100.0):
    """One panel per quantity: each algorithm's mean paired difference to the reference with
    its 95% interval as a horizontal bar; the dotted line is no difference."""
    n_rows = max(len(rows) for rows in panels.values())
    fig, axes = _figure(len(panels), width=PANEL_IN, height=max(2.0, 0.35 * n_rows + 1.2))
    for ax, (title, rows) in zip(axes, panels.items()):
        for y, (label, d) in enumerate(reversed(rows)):
            lo = d.low if d.n > 1 else d.mean
            hi = d.high if d.n > 1 else d.mean
            colour = {"higher": "#1a7f37", "lower": "#b42318"}.get(d.verdict, "#555555")
            ax.plot([scale * lo, scale * hi], [y, y], color=colour, lw=2)
            ax.plot(scale * d.mean, y, "o", color=colour, ms=5)
        ax.axvline(0, ls=":", color="#888888", lw=0.8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{label} (n={d.n})" for label, d in reversed(rows)],
                           fontsize=FONT_PT)
        ax.set_title(title, fontsize=FONT_PT + 1)
        ax.set_xlabel(f"difference to {reference}", fontsize=FONT_PT)
        ax.tick_params(labelsize=FONT_PT)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"Paired differences to {reference} (training-domain validation)\n"
                 "mean and 95% Student-t interval over pairs (same trial seed and test domain)",
                 fontsize=FONT_PT + 1)
    return fig


def draw_hparam_curves(curves, hparam: str, y_label: str, scale: float = 100.0):
    """One panel per dataset: a line per label over `hparam`; references are dashed lines."""
    n_max = max((len(lines) for lines in curves.values()), default=0)
    leg_cols = _legend_columns(n_max)
    fig, axes = _figure(len(curves), width=PANEL_IN * 1.3 + 2.4 * leg_cols,
                        height=max(PANEL_IN, 0.14 * math.ceil(n_max / max(leg_cols, 1)) + 1))
    labels = [lab for c in curves.values() for lab in c]
    colours = _colours(list(dict.fromkeys(labels)))
    for ax, (ds, lines) in zip(axes, curves.items()):
        xs = [p[0] for label, pts in lines.items() if not label.endswith(REFERENCE)
              for p in pts]
        order, numeric = _axis_order(xs, hparam)
        pos = (lambda x: x) if numeric else (lambda x: order.index(x))
        for label, pts in lines.items():
            c = colours[label]
            if label.endswith(REFERENCE):
                _, mean, se, _ = pts[0]
                ax.axhline(scale * mean, ls="--", color=c, lw=1.2, label=label)
                ax.axhspan(scale * (mean - se), scale * (mean + se), color=c, alpha=0.15, lw=0)
                continue
            x = [pos(p[0]) for p in pts]
            ax.errorbar(x, [scale * p[1] for p in pts], yerr=[scale * p[2] for p in pts],
                        marker="o", ms=4, capsize=3, color=c, label=label)
        if not numeric:
            ax.set_xticks(range(len(order)), [_fmt_value(v) for v in order])
        elif order and order[0] > 0 and order[-1] / order[0] >= 100:
            ax.set_xscale("log")      # learning rates, weights spanning decades
        ax.set_title(ds, fontsize=FONT_PT + 1)
        ax.set_xlabel(hparam, fontsize=FONT_PT)
        ax.set_ylabel(y_label, fontsize=FONT_PT)
        ax.tick_params(labelsize=FONT_PT)
        ax.grid(alpha=0.3)
        _legend(ax, len(lines))
    fig.suptitle(f"{y_label} against {hparam}\nlast checkpoint, mean ± s.e. over trial seeds",
                 fontsize=FONT_PT + 1)
    return fig


def _legend_columns(n_entries: int) -> int:
    """Legend columns beside the panel (0: inside it)."""
    return 0 if n_entries <= 6 else 1 + n_entries // 40


def _legend(ax, n_entries: int):
    """Inside the panel when short, to its right when long (it never hides the lines)."""
    cols = _legend_columns(n_entries)
    if cols == 0:
        ax.legend(fontsize=FONT_PT - 1)
    else:
        ax.legend(fontsize=FONT_PT - 2, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  ncols=cols)


def draw_densities(curves):
    """One panel per (dataset, line): the three region densities against the step."""
    panels = [(ds, label, regions) for ds, lines in curves.items()
              for label, regions in lines.items()]
    fig, axes = _figure(len(panels), height=PANEL_IN * 0.8)
    colours = _colours(list(DENSITY_REGIONS))
    for ax, (ds, label, regions) in zip(axes, panels):
        for region, pts in regions.items():
            s = np.array([p[0] for p in pts], dtype=float)
            m = np.array([p[1] for p in pts])
            e = np.array([p[2] for p in pts])
            ax.plot(s, m, marker=".", color=colours[region], label=region)
            ax.fill_between(s, m - e, m + e, color=colours[region], alpha=0.2, lw=0)
        ax.axhline(1.0, ls=":", color="#888888", lw=0.8)
        ax.set_title(f"{ds}: {label}", fontsize=FONT_PT + 1)
        ax.set_xlabel("step", fontsize=FONT_PT)
        ax.set_ylabel("mask density (mass share / area share)", fontsize=FONT_PT)
        ax.tick_params(labelsize=FONT_PT)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=FONT_PT - 1)
    fig.suptitle("Where the learned mask puts its mass on the test domain\n(mass share / area "
                 "share, 1 = uniform; mean ± s.e. over runs)", fontsize=FONT_PT + 1)
    return fig


def _metric_label(metric: str) -> str:
    name = METRICS.get(metric, (metric, 0))[0]
    return f"test-domain {name} (%)" if metric == "acc" else f"test-domain {name} (x100)"


# --------------------------------------------------------------------------------------------
# The collector's entry point
# --------------------------------------------------------------------------------------------

class SweepFigures:
    """The data of every sweep figure, gathered before the tables are printed (so a bad
    `--figures_vs` is one error line), drawn after they are written."""

    def __init__(self, sweep, report, vs: Sequence[str] = (), metric: str = "acc"):
        iid = report.methods[0]
        idx = report.index[iid]
        self.metric = metric
        # --figures_vs marks a grid sweep (hparams_seed 0 for every variant): model selection
        # would pick across grid points, so the selection figures are left out
        self.ood_id = selected_points(idx, report.datasets, report.algorithms, "id_acc",
                                      "ood_acc") if not vs else {}
        self.comp_suff = None
        self.notes: List[str] = []
        if {"comp", "suff"} <= set(report.metrics) and not vs:
            self.comp_suff = selected_points(idx, report.datasets, report.algorithms,
                                             "ood_suff", "ood_comp") or None
        if self.comp_suff is None and not vs:
            self.notes.append("note: comp_vs_suff.png skipped: the records carry no "
                              "comprehensiveness/sufficiency (explain_n 0?)")
        self.forest = {ref: forest_points(report, ref) for ref in report.compare_to}
        need_records = vs or any("_mask_density_" in k for k in sweep.keys)
        lasts = last_records(sweep) if need_records else {}
        self.vs = {h: hparam_curve_points(list(lasts.values()), h, metric) for h in vs}
        self.density = {}
        if any("_mask_density_" in k for k in sweep.keys):
            runs = [run for run, r in lasts.items() if _meta(r) is not None and
                    any("_mask_density_" in k for k in r)]
            self.density = density_curve_points([run_history(sweep, run) for run in runs])

    def write(self, out_dir: str) -> List[str]:
        os.makedirs(out_dir, exist_ok=True)
        paths = []
        if self.ood_id:
            paths.append(save_figure(draw_selected(
                self.ood_id, "ID accuracy, training domains' held-out splits (%)",
                "OOD accuracy, test domain (%)",
                "Selected models (training-domain validation)\nmean ± s.e. over trials",
                diagonal=True), os.path.join(out_dir, "ood_vs_id.png")))
        if self.comp_suff:
            paths.append(save_figure(draw_selected(
                self.comp_suff, "sufficiency AOPC, test domain (x100, lower is better)",
                "comprehensiveness AOPC, test domain (x100, higher is better)",
                "Selected models (training-domain validation)\nmean ± s.e. over trials"),
                os.path.join(out_dir, "comp_vs_suff.png")))
        for hparam, curves in self.vs.items():
            if not curves:
                _warn(f"note: {self.metric}_vs_{hparam}.png skipped: no run records "
                      f"{self.metric} on its test domain")
                continue
            paths.append(save_figure(
                draw_hparam_curves(curves, hparam, _metric_label(self.metric),
                                   scale=100.0),
                os.path.join(out_dir, f"{self.metric}_vs_{hparam}.png")))
            text = os.path.join(out_dir, f"{self.metric}_vs_{hparam}.txt")
            with atomic_open(text, "w", fsync=False) as f:
                f.write(hparam_curve_table(curves, hparam, _metric_label(self.metric)))
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
            _warn(note)
        return paths


# --------------------------------------------------------------------------------------------
# Saliency grid from explanations.npz (no torch)
# --------------------------------------------------------------------------------------------

def _run_record(run_dir: str) -> Optional[dict]:
    """The first record of the run that carries its args (and hparams)."""
    path = os.path.join(run_dir, "results.jsonl")
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        for line in f:
            rec = parse_line(line) if line.strip() else None
            if rec and isinstance(rec.get("args"), dict):
                return rec
    return None


def parse_hparam_filters(items: Sequence[str]) -> Dict[str, object]:
    """`NAME=VALUE` strings -> {name: value}; VALUE read as JSON when it is (0.5, false)."""
    out = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--hparam {item!r}: write NAME=VALUE, e.g. digits_cue=patch")
        try:
            out[name] = json.loads(text)
        except json.JSONDecodeError:
            out[name] = text
    return out


def find_explanations(input_dir: str, algorithms: Optional[Sequence[str]] = None,
                      dataset: Optional[str] = None, test_env: Optional[int] = None,
                      trial_seed: Optional[int] = None, hparams_seed: Optional[int] = None,
                      hparams: Optional[Dict[str, object]] = None) -> List[Tuple[str, str]]:
    """[(row label, explanations.npz path)]: one run per (dataset, algorithm), in table order.

    Among matching runs the first with hparams_seed 0 and the smallest trial seed wins
    (ties: run folder name). Filters left as None match everything; `hparams` keeps runs whose
    hparams hold these values (one variant of a grid sweep).
    """
    if not os.path.isdir(input_dir):
        raise ConfigError(f"--input_dir {input_dir!r} is not a folder; pass the sweep's folder")
    found: Dict[tuple, list] = defaultdict(list)
    for name in sorted(os.listdir(input_dir)):
        run_dir = os.path.join(input_dir, name)
        path = os.path.join(run_dir, EXPLANATIONS_FILE)
        if not os.path.isfile(path):
            continue
        rec = _run_record(run_dir) or {}
        args = rec.get("args") or {}
        if any((rec.get("hparams") or {}).get(k) != v for k, v in (hparams or {}).items()):
            continue
        if args.get("task") == SINGLE_SOURCE:
            continue
        alg, ds = str(args.get("algorithm", name)), str(args.get("dataset", "?"))
        ts, hs = int(args.get("trial_seed") or 0), int(args.get("hparams_seed") or 0)
        te = (args.get("test_envs") or [None])[0]
        if (algorithms and alg not in algorithms) or (dataset and ds != dataset) or \
                (trial_seed is not None and ts != trial_seed) or \
                (hparams_seed is not None and hs != hparams_seed) or \
                (test_env is not None and te != test_env):
            continue
        found[ds, alg].append(((hs != 0, ts, hs, name), path))
    if not found:
        raise DataError(f"no run folder under {input_dir} has {EXPLANATIONS_FILE} matching the "
                        "filters; runs write it at their end (check --algorithms, --dataset, "
                        "--test_env, --trial_seed, --hparams_seed)")
    if algorithms:
        missing = [a for a in algorithms if a not in {alg for _, alg in found}]
        if missing:
            _warn(f"warning: saliency: no {EXPLANATIONS_FILE} for {', '.join(missing)}")
    datasets = dataset_order([ds for ds, _ in found])
    algs = list(algorithms) if algorithms else algorithm_order([a for _, a in found])
    out = []
    for ds in datasets:
        for alg in algs:
            if (ds, alg) in found:
                label = alg if len(datasets) == 1 else f"{ds}: {alg}"
                out.append((label, min(found[ds, alg])[1]))
    return out


def load_explanations(path: str, k: int) -> dict:
    """The first k images of an explanations.npz, ready to display (numpy only)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {name: z[name] for name in z.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}; delete it and rerun the run's last step")
    missing = [n for n in ("x", "y", "pred", "cam") if n not in data]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; it was written by another version")
    x = data["x"][:k].astype(np.float32)
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    hi = x.max(axis=(1, 2, 3), keepdims=True)
    images = ((x - lo) / np.maximum(hi - lo, 1e-8)).transpose(0, 2, 3, 1)
    cam = data["cam"][:k].astype(np.float32)
    cam = cam / np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-8)
    out = {"images": images, "cam": cam, "y": data["y"][:k], "pred": data["pred"][:k],
           "mask": data["mask"][:k, 0].astype(np.float32) if "mask" in data else None,
           "gt": data["gt"][:k, 0] if "gt" in data else None,
           "test_env": int(data["test_env"]) if "test_env" in data else None}
    return out


def saliency_rows(runs: Sequence[Tuple[str, str]], k: int = 6) -> List[Tuple[str, str, dict]]:
    """[(row label, kind, explanations)] with kind "cam", plus a "mask" row after each
    algorithm that learns a mask."""
    rows = []
    for label, path in runs:
        ex = load_explanations(path, k)
        rows.append((label, "cam", ex))
        if ex["mask"] is not None:
            rows.append((f"{label} mask", "mask", ex))
    return rows


def draw_saliency(rows, title: str = ""):
    """Rows = algorithms (and learned masks), columns = images: the image under its Grad-CAM
    (bilinear, alpha 0.5), the ground-truth mask as a white contour; each panel titled y/pred
    (green right, red wrong)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    k = max(len(ex["y"]) for _, _, ex in rows)
    side = 1.3
    fig = Figure(figsize=(side * k + 1.2, side * 1.15 * len(rows) + 0.5), dpi=120,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), k, squeeze=False)
    for r, (label, kind, ex) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(ex["y"]):
                ax.set_axis_off()
                continue
            img = ex["images"][c]
            h, w = img.shape[:2]
            if kind == "cam":
                ax.imshow(img, interpolation="nearest")
                ax.imshow(ex["cam"][c], cmap="jet", alpha=0.5, vmin=0, vmax=1,
                          interpolation="bilinear", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
                if ex["gt"] is not None and ex["gt"][c].max() > 0:
                    ax.contour(ex["gt"][c].astype(float), levels=[0.5], colors="white",
                               linewidths=0.6)
                ok = int(ex["y"][c]) == int(ex["pred"][c])
                ax.set_title(f"{int(ex['y'][c])}/{int(ex['pred'][c])}", fontsize=FONT_PT,
                             color="#1a7f37" if ok else "#cf222e", pad=2)
            else:
                ax.imshow(ex["mask"][c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if c == 0:
                ax.set_ylabel(label, fontsize=FONT_PT)
    fig.suptitle(title or "Grad-CAM on the test domain (title: true/predicted; white: true "
                 "mask)", fontsize=FONT_PT + 1)
    return fig


def saliency_figure(input_dir: str, out: str, algorithms=None, k: int = 6, **filters) -> int:
    """Write the saliency grid of a sweep to `out`; returns the number of rows drawn."""
    rows = saliency_rows(find_explanations(input_dir, algorithms, **filters), k)
    envs = {ex["test_env"] for _, _, ex in rows if ex["test_env"] is not None}
    title = ("Grad-CAM on test domain " + ", ".join(map(str, sorted(envs))) +
             " (title: true/predicted; white contour: true mask)") if envs else ""
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    save_figure(draw_saliency(rows, title), out)
    return len(rows)


# --------------------------------------------------------------------------------------------
# Learning curves of a few runs (picking a sweep's step count)
# --------------------------------------------------------------------------------------------

def learning_curve_points(history: Sequence[dict]) -> Dict[str, List[Tuple[int, float]]]:
    """One run's curves: `train_val` = mean accuracy of the training domains' held-out splits
    (what training-domain validation selects on), `test` = the test domain's accuracy."""
    args = history[-1]["args"]
    test_envs = list(args["test_envs"])
    n_envs = 1 + max(int(k[3:k.index("_")]) for k in history[-1]
                     if k.startswith("env") and k.endswith("_acc"))
    train = [i for i in range(n_envs) if i not in test_envs]
    out = {"train_val": [], "test": []}
    for r in history:
        out["train_val"].append((int(r["step"]), float(np.mean([r[f"env{i}_out_acc"] for i in train]))))
        out["test"].append((int(r["step"]), float(r[f"env{test_envs[0]}_in_acc"])))
    return out


def learning_curves_figure(input_dir: str, out: str) -> int:
    """Every run folder under `input_dir` (named by what it is: ERM, ALIGN, ERM_batch16...)
    as two lines: training-domain validation accuracy (solid) and test-domain accuracy
    (dashed), against the step."""
    runs = sorted(d for d in os.listdir(input_dir)
                  if os.path.isfile(os.path.join(input_dir, d, "results.jsonl")))
    if not runs:
        raise ConfigError(f"{input_dir} holds no run folder with results.jsonl")
    fig, axes = _figure(1, width=PANEL_IN * 1.6, height=PANEL_IN)
    ax = axes[0]
    colours = _colours(runs)
    for name in runs:
        with open(os.path.join(input_dir, name, "results.jsonl"), "rb") as f:
            history = [parse_line(line) for line in f if line.strip()]
        pts = learning_curve_points(history)
        for key, style in (("train_val", "-"), ("test", "--")):
            steps, accs = zip(*pts[key])
            ax.plot(steps, 100 * np.array(accs), style, color=colours[name], marker=".",
                    label=f"{name}: {'training-domain validation' if key == 'train_val' else 'test domain'}")
    ax.set_xlabel("step", fontsize=FONT_PT)
    ax.set_ylabel("accuracy (%)", fontsize=FONT_PT)
    ax.tick_params(labelsize=FONT_PT)
    ax.grid(alpha=0.3)
    _legend(ax, 2 * len(runs))
    ax.set_title(f"Learning curves ({os.path.basename(os.path.normpath(input_dir))})",
                 fontsize=FONT_PT + 1)
    save_figure(fig, out)
    return len(runs)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m domainbed_align.figures",
                description="Figures that need no torch. Sweep-level figures: "
                            "collect_results --figures DIR.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("saliency", help="Grad-CAM grid from the runs' explanations.npz")
    s.add_argument("--input_dir", required=True, help="the sweep's output folder")
    s.add_argument("--out", required=True, help="PNG file to write")
    s.add_argument("--algorithms", nargs="+", help="rows, in this order (default: all found)")
    s.add_argument("--dataset")
    s.add_argument("--test_env", type=int)
    s.add_argument("--trial_seed", type=int)
    s.add_argument("--hparams_seed", type=int)
    s.add_argument("--k", type=int, default=6, help="images per row (default 6)")
    s.add_argument("--hparam", action="append", metavar="NAME=VALUE",
                   help="only runs with this hparam value, e.g. digits_cue=patch (repeatable)")
    c = sub.add_parser("curves", help="learning curves of the run folders under --input_dir")
    c.add_argument("--input_dir", required=True)
    c.add_argument("--out", required=True, help="PNG file to write")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "curves":
            n = learning_curves_figure(args.input_dir, args.out)
            print(f"wrote {args.out} ({n} runs)", file=sys.stderr)
            return 0
        if args.k < 1:
            raise ConfigError(f"--k {args.k}: pass at least 1 image per row")
        n = saliency_figure(args.input_dir, args.out, args.algorithms, args.k,
                            dataset=args.dataset, test_env=args.test_env,
                            trial_seed=args.trial_seed, hparams_seed=args.hparams_seed,
                            hparams=parse_hparam_filters(args.hparam))
    except (_ArgumentError, DomainBedAlignError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({n} rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
