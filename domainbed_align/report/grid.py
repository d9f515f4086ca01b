"""The data behind the grid-sweep figures: a metric against one hparam, the learned mask's
densities over training. Pure numbers from records (tested on hand-made ones); drawing is in
`draw`.

A grid sweep fixes hparams per variant (hparams_seed 0); each line is one algorithm plus the
grid hparams that vary between its runs. Points are mean +/- standard error over trial seeds
with the tables' formula, so a figure and its table agree.
"""
import json
import math
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from domainbed_align.lib.errors import ConfigError
from domainbed_align.model_selection import SINGLE_SOURCE, run_meta
from domainbed_align.report.names import algorithm_order, dataset_order
from domainbed_align.report.selected import mean_se

# Regions of the learned-mask density keys env{i}_in_mask_density_<region> (1 = uniform mass).
DENSITY_REGIONS = ("strokes", "cue", "background")
REFERENCE = " (reference)"       # label suffix of an algorithm drawn as a horizontal line
MAX_LINES = 20                   # more lines than this in one panel: not a grid (warning)

# Categorical hparams whose values have a natural order (otherwise values are sorted).
HPARAM_VALUE_ORDER = {
    "mask_quality": ("gt", "dilated", "shifted", "partial", "random"),
}

Point = Tuple[object, float, float, int]       # (x, mean, se, n)


def warn(text: str):
    print(text, file=sys.stderr)


def value_key(value) -> str:
    return json.dumps(value, sort_keys=True)


def fmt_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run_keys(record: dict) -> Optional[dict]:
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
        m = run_keys(r)
        if m is None:
            continue
        if m["task"] == SINGLE_SOURCE:
            n_ss += 1
        elif m["hparams_seed"] != 0:
            n_random += 1
        else:
            kept.append(r)
    if n_random:
        warn(f"warning: {what}: ignored {n_random} run(s) with hparams_seed != 0 (random "
              "search, not a grid); grid sweeps use hparams_seed 0")
    if n_ss:
        warn(f"note: {what}: left out {n_ss} single-source run(s) (domain generalisation only)")
    return kept


def grid_labels(records: Sequence[dict], exclude: Sequence[str] = ()) -> List[str]:
    """Line label of each run: its algorithm plus the grid hparams that vary between runs of
    that algorithm (on the same dataset), e.g. "ERM, digits_cue=background"."""
    groups: Dict[tuple, List[int]] = defaultdict(list)
    for i, r in enumerate(records):
        m = run_keys(r)
        groups[m["dataset"], m["algorithm"]].append(i)
    labels = [""] * len(records)
    for (_, alg), idx in groups.items():
        values: Dict[str, set] = defaultdict(set)
        for i in idx:
            hp = records[i].get("hparams") or {}
            for name, v in hp.items():
                values[name].add(value_key(v))
        names = set(values)
        for i in idx:                    # a name some runs lack varies too
            names_i = set(records[i].get("hparams") or {})
            for name in names - names_i:
                values[name].add(value_key(None))
        varying = sorted(n for n, vs in values.items() if len(vs) > 1 and n not in exclude)
        for i in idx:
            hp = records[i].get("hparams") or {}
            labels[i] = alg + "".join(f", {n}={fmt_value(hp.get(n))}" for n in varying)
    return labels


def axis_order(values: Sequence[object], hparam: str) -> Tuple[List[object], bool]:
    """Distinct x values in axis order and whether the axis is numeric."""
    distinct = list({value_key(v): v for v in values}.values())
    if distinct and all(is_number(v) for v in distinct):
        return sorted(distinct), True
    known = [v for v in HPARAM_VALUE_ORDER.get(hparam, ()) if value_key(v) in
             {value_key(d) for d in distinct}]
    rest = sorted((v for v in distinct if value_key(v) not in {value_key(k) for k in known}), key=str)
    return known + rest, False


def label_order(labels: Sequence[str]) -> List[str]:
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
        m = run_keys(r)
        hp = r.get("hparams") or {}
        x = hp.get(hparam) if len(names) == 1 else \
            ", ".join(f"{n}={fmt_value(hp.get(n))}" for n in names)
        y = r.get(f"env{m['test_env']}_in_{metric}")
        x_values[m["dataset"]][value_key(x)] = x
        by_ds[m["dataset"]][label][value_key(x)][m["trial_seed"]].append(y)
    out: Dict[str, Dict[str, List[Point]]] = {}
    for ds in dataset_order(list(by_ds)):
        lines = by_ds[ds]
        some_line_varies = any(len(per_x) > 1 for per_x in lines.values())
        # runs that lack the hparam (x None) are a category only where no line varies it
        order, _ = axis_order([v for v in x_values[ds].values()
                                if v is not None or not some_line_varies], hparam)
        curves: Dict[str, List[Point]] = {}
        for label in label_order(list(lines)):
            per_x = lines[label]
            reference = some_line_varies and len(per_x) == 1
            xs = [x_values[ds][k] for k in per_x] if reference else order
            points = []
            for x in xs:
                trials = per_x.get(value_key(x), {})
                means = [mean_se(trials[t])[0] for t in sorted(trials)]
                mean, se, n = mean_se(means)
                if n:
                    points.append((x, mean, se, n))
            if points:
                curves[label + (REFERENCE if reference else "")] = points
        if len(curves) > MAX_LINES:
            warn(f"warning: --figures_vs {hparam}: {len(curves)} lines on {ds}: its runs "
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
                where = f"{hparam}={fmt_value(x)}" if "+" not in hparam else str(x)
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
    runs = [h for h in histories if h and id(h[-1]) in wanted and has_density(h)]
    labels = grid_labels([h[-1] for h in runs])
    acc: Dict[str, Dict[str, Dict[str, Dict[int, list]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for h, label in zip(runs, labels):
        m = run_keys(h[-1])
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
        for label in label_order(list(acc[ds])):
            out[ds][label] = {region: [(s, *mean_se(vals)) for s, vals in
                                       sorted(acc[ds][label][region].items())]
                              for region in DENSITY_REGIONS if acc[ds][label][region]}
    return out


def has_density(history: Sequence[dict]) -> bool:
    t = run_keys(history[-1])["test_env"]
    return any(f"env{t}_in_mask_density_{region}" in r for r in history
               for region in DENSITY_REGIONS)
