"""Turn a sweep folder into DomainBed tables, ID/OOD tables and explanation tables.

    python -m domainbed_align.collect_results --input_dir SWEEP [--latex | --markdown]
        [--csv FILE] [--selection NAMES] [--metrics NAMES] [--include_incomplete]
        [--figures DIR [--figures_vs HPARAM ...] [--figures_metric NAME]]

Output, in this order:
1. DomainBed's part, byte-identical to upstream `collect_results` in text mode: "Total records",
   then per selection method one table per dataset and an averages table.
2. ID/OOD tables per selection method: per dataset the OOD table (test-domain accuracy of the
   selected model) and the ID table (its mean accuracy on the training domains' held-out
   splits), then an averages table with both.
3. Explanation tables (only when records carry AUC or explanation metrics): per selection
   method and dataset, one table on the test domain and one on the training domains' held-out
   splits; columns accuracy, prediction AUC, then each metric with an arrow for its direction.
4. Single-source tables (only for runs with args.task == "single_source").
Text mode tees stdout into <input_dir>/results.txt (DomainBed); --latex writes results.tex,
--markdown results.md. Warnings go to stderr. --figures DIR also writes PNG figures of the same
selection (`figures.py`; matplotlib is imported only then).

Never imports torch: it runs on a login node.
"""
import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from domainbed_align import catalog
from domainbed_align.collect_cache import (RecordCache, RunEntry, cached_report, checkpoints_key,
                                           file_stat, report_key, save_report)
from domainbed_align.lib.errors import ConfigError, DomainBedAlignError
from domainbed_align.lib.paired import format_difference, pair_up, paired_difference
from domainbed_align.lib.tables import Table, format_avg, format_mean
from domainbed_align.model_selection import (SINGLE_SOURCE, Checkpoints, RunPart,
                                             get_selection_methods, record_arrays,
                                             run_meta)

# Parsing JSON is nearly all of the collector's time. orjson (a dependency) parses floats
# exactly and is ~1.8x faster than pandas' bundled ujson with precise_float, ~2.5x than json.
try:
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - installed without dependencies
    try:
        from pandas._libs._ujson import ujson_loads as _ujson_loads

        def _fast_loads(line):
            return _ujson_loads(line, precise_float=True)
    except ImportError:
        _fast_loads = None

# Metric suffix -> (description, direction): +1 higher is better, -1 lower, 0 control/neutral.
METRICS = {
    "acc": ("accuracy", +1),
    "auc": ("prediction ROC-AUC", +1),
    "comp": ("comprehensiveness AOPC", +1),
    "suff": ("sufficiency AOPC", -1),
    "comp_rand": ("comprehensiveness, random saliency (control)", 0),
    "suff_rand": ("sufficiency, random saliency (control)", 0),
    "del": ("deletion AUC", -1),
    "ins": ("insertion AUC", +1),
    "pg": ("pointing game", +1),
    "pg_cls": ("pointing game, mean over classes", +1),
    "epg": ("energy pointing game", +1),
    "iou": ("IoU of top saliency with the mask", +1),
    "mask_epg": ("learned mask energy pointing game", +1),
    "mask_iou": ("learned mask IoU", +1),
    "mask_area": ("learned mask area", 0),
    # where the mass sits, relative to each region's area (1 = uniform): on the ground-truth
    # evidence (higher is better) and on a dataset's known shortcut (SpuriousDigits' cue)
    "cam_density_strokes": ("Grad-CAM density on the evidence", +1),
    "cam_density_cue": ("Grad-CAM density on the shortcut", -1),
    "mask_density_strokes": ("learned mask density on the evidence", +1),
    "mask_density_cue": ("learned mask density on the shortcut", -1),
}
_ARROWS = {+1: "↑", -1: "↓", 0: "·"}
_LATEX_ARROWS = {+1: r"$\uparrow$", -1: r"$\downarrow$", 0: r"$\cdot$"}

# Upstream DomainBed datasets a sweep may hold (their table order and column names), so that an
# upstream sweep lays out exactly as upstream does even for datasets we do not ship.
UPSTREAM_DATASET_ENVIRONMENTS = {
    "Debug28": ("0", "1", "2"),
    "Debug224": ("0", "1", "2"),
    "ColoredMNIST": ("+90%", "+80%", "-90%"),
    "RotatedMNIST": ("0", "15", "30", "45", "60", "75"),
    "VLCS": ("C", "L", "S", "V"),
    "PACS": ("A", "C", "P", "S"),
    "OfficeHome": ("A", "C", "P", "R"),
    "TerraIncognita": ("L100", "L38", "L43", "L46"),
    "DomainNet": ("clip", "info", "paint", "quick", "real", "sketch"),
    "SVIRO": ("aclass", "escape", "hilux", "i3", "lexus", "tesla", "tiguan", "tucson", "x5",
              "zoe"),
    "WILDSCamelyon": ("hospital_0", "hospital_1", "hospital_2", "hospital_3", "hospital_4"),
    "WILDSFMoW": ("region_0", "region_1", "region_2", "region_3", "region_4", "region_5"),
}

PARALLEL_MIN_FILES = 200   # below this, one process reads faster than a pool starts


# --------------------------------------------------------------------------------------------
# Reading a sweep
# --------------------------------------------------------------------------------------------

def parse_line(line: str):
    """One results.jsonl line -> dict, or None when it is not a complete JSON object."""
    rec = None
    if _fast_loads is not None:
        try:
            rec = _fast_loads(line)
        except (ValueError, OverflowError, TypeError):
            rec = None
    if rec is None:
        try:
            rec = json.loads(line)
        except ValueError:
            return None
    return rec if isinstance(rec, dict) else None


def read_run(path: str):
    """Parse one results.jsonl tolerantly.

    Returns (kept, n_skipped, n_duplicates): `kept` is [(line_index, record)] sorted by step,
    one per step, the last written winning (a requeued upstream run rewrites its steps).
    """
    by_step, n_skipped, n_seen = {}, 0, 0
    with open(path, "rb") as f:  # bytes: orjson parses them without a decode step
        for i, line in enumerate(f):
            if not line.strip():
                continue
            rec = parse_line(line)
            if rec is None or not isinstance(rec.get("step"), (int, float)):
                n_skipped += 1
                continue
            n_seen += 1
            by_step[rec["step"]] = (i, rec)
    kept = [by_step[s] for s in sorted(by_step)]
    return kept, n_skipped, n_seen - len(kept)


def _read_run_part(job):
    """Worker: one run folder -> compact arrays (pickling 100 floats per record is the cost
    we avoid by not sending records back)."""
    run, path = job
    kept, n_skipped, n_dup = read_run(path)
    n_all = len(kept)
    kept = [(i, r) for i, r in kept if run_meta(r.get("args")) is not None]
    n_unusable = n_all - len(kept)
    recs = [r for _, r in kept]
    steps, n_envs, acc_in, acc_out = record_arrays(recs)
    args = recs[-1].get("args") if recs else None
    lines = np.array([i for i, _ in kept], dtype=np.int64)
    # records of one run carry the same keys; the last one names the metrics recorded
    keys = {k for k, v in recs[-1].items() if k.startswith("env") and v is not None} \
        if recs else set()
    return RunPart(args, steps, n_envs, acc_in, acc_out, run=run, lines=lines), \
        n_skipped, n_dup, keys, n_unusable


class Sweep:
    """The usable checkpoints of a sweep folder plus what was left out, for the warnings."""

    def __init__(self, input_dir: str, include_incomplete: bool = False,
                 workers: Optional[int] = None, use_cache: bool = True,
                 write_cache: bool = True):
        if not os.path.isdir(input_dir):
            raise ConfigError(f"--input_dir {input_dir!r} is not a folder; pass the sweep's "
                              "output folder")
        self.input_dir = input_dir
        self.run_names: List[str] = []
        self.n_incomplete = 0
        self.n_done_without_records = 0
        for name in sorted(os.listdir(input_dir)):
            run_dir = os.path.join(input_dir, name)
            records = os.path.join(run_dir, "results.jsonl")
            if not os.path.isfile(records) or os.path.getsize(records) == 0:
                self.n_done_without_records += os.path.exists(os.path.join(run_dir, "done"))
                continue
            if not include_incomplete and not os.path.exists(os.path.join(run_dir, "done")):
                self.n_incomplete += 1
                continue
            self.run_names.append(name)
        paths = [self.results_path(i) for i in range(len(self.run_names))]
        stats = [file_stat(p) for p in paths]
        cache = RecordCache.load(input_dir) if use_cache else RecordCache(input_dir)
        todo = [i for i, (name, st) in enumerate(zip(self.run_names, stats))
                if name not in cache.entries or cache.entries[name].stat != st]
        if workers is None:
            workers = min(os.cpu_count() or 1, 8)
        jobs = [(i, paths[i]) for i in todo]
        if workers > 1 and len(jobs) >= PARALLEL_MIN_FILES:
            ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
            with ctx.Pool(workers) as pool:
                out = pool.map(_read_run_part, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
        else:
            out = [_read_run_part(j) for j in jobs]
        for i, o in zip(todo, out):
            cache.entries[self.run_names[i]] = RunEntry(stats[i], *o)
        entries = [cache.entries[name] for name in self.run_names]
        self._record_cache = cache
        self.ckpts_key = key = checkpoints_key(self.run_names, stats)
        self.n_skipped_lines = sum(e.n_skipped for e in entries)
        self.n_files_with_skips = sum(1 for e in entries if e.n_skipped)
        self.n_duplicates = sum(e.n_dup for e in entries)
        self.keys = set().union(*(e.keys for e in entries)) if entries else set()
        if cache.ckpts is not None and cache.ckpts_key == key and not todo:
            self.ckpts = cache.ckpts   # nothing changed since the last call
        else:
            parts = [cache.part(name) for name in self.run_names]
            for run, part in enumerate(parts):
                part.run = run
            self.ckpts = Checkpoints.from_parts(parts)
            self.ckpts.n_unusable += sum(e.n_unusable for e in entries)
            if use_cache and write_cache:
                cache.save(self.run_names, key, self.ckpts)
        self._cache: Dict[int, Dict[int, dict]] = {}

    def split_by(self, names: Sequence[str]) -> None:
        """Label each run's algorithm with the values its --hparams JSON sets for `names`
        (a grid sweep's variants: `RES[res_target_rescale=false]`), so that each variant is
        selected, tabulated and compared as an algorithm of its own."""
        if not names:
            return
        labels = {}
        for run, name in enumerate(self.run_names):
            args = self._record_cache.part(name).args or {}
            try:
                hp = json.loads(args.get("hparams") or "{}")
            except (TypeError, ValueError):
                hp = {}
            hp = hp if isinstance(hp, dict) else {}
            parts = [f"{n}={v if isinstance(v, str) else json.dumps(v)}"
                     for n, v in sorted(hp.items()) if n in names]
            labels[run] = "[" + ",".join(parts) + "]" if parts else ""
        meta = self.ckpts.meta
        suffix = meta["run"].map(labels).fillna("")
        meta["algorithm"] = (meta["algorithm"] + suffix).astype(object)

    def results_path(self, run: int) -> str:
        return os.path.join(self.input_dir, self.run_names[run], "results.jsonl")

    def records_at(self, rows: np.ndarray) -> Dict[int, dict]:
        """Full records of the given checkpoint rows (re-read lazily, a few files)."""
        meta = self.ckpts.meta
        out = {}
        want = meta.loc[rows, ["run", "line"]]
        for run, group in want.groupby("run"):
            if run not in self._cache:
                lines = {}
                with open(self.results_path(run), "r", encoding="utf-8",
                          errors="replace") as f:
                    for i, line in enumerate(f):
                        lines[i] = line
                self._cache[run] = lines
            for row, line in zip(group.index, group["line"]):
                out[row] = parse_line(self._cache[run][line]) or {}
        return out

    def warnings(self) -> List[str]:
        w = []
        if self.n_skipped_lines:
            w.append(f"warning: skipped {self.n_skipped_lines} truncated or unreadable line(s) "
                     f"in {self.n_files_with_skips} results.jsonl file(s)")
        if self.n_duplicates:
            w.append(f"warning: dropped {self.n_duplicates} duplicate-step record(s) "
                     "(requeued runs); kept the last of each step")
        if self.n_incomplete:
            w.append(f"warning: excluded {self.n_incomplete} incomplete run(s) without a "
                     "'done' file; pass --include_incomplete to use them")
        if self.n_done_without_records:
            w.append(f"warning: skipped {self.n_done_without_records} run(s) marked done without "
                     "records (results.jsonl missing or empty); `sweep status` names them")
        if self.ckpts.n_unusable:
            w.append(f"warning: ignored {self.ckpts.n_unusable} record(s) whose args lack "
                     "algorithm, dataset or test_envs (or a single_source run with more than "
                     "one training domain)")
        return w


# --------------------------------------------------------------------------------------------
# Names and order
# --------------------------------------------------------------------------------------------

def algorithm_order(names_in_order: Sequence[str]) -> List[str]:
    """Our ALGORITHMS first, in their order (a `--split_by` variant `ALG[k=v]` with its base
    algorithm, variants sorted); unknown ones after, in order of appearance."""
    seen = list(dict.fromkeys(names_in_order))
    order = catalog.ALGORITHM_ORDER
    known = sorted((a for a in seen if base_algorithm(a) in order),
                   key=lambda a: (order.index(base_algorithm(a)), a))
    return known + [a for a in seen if base_algorithm(a) not in order]


def base_algorithm(label: str) -> str:
    """`RES[res_target_rescale=false]` -> `RES` (a `--split_by` label's algorithm)."""
    return label.split("[", 1)[0]


def _known_datasets() -> List[str]:
    order = list(UPSTREAM_DATASET_ENVIRONMENTS)
    prev = None
    for name in catalog.DATASET_ENVIRONMENTS:       # ours, placed after their predecessor
        if name not in order:
            order.insert(order.index(prev) + 1 if prev in order else len(order), name)
        prev = name
    return order


def dataset_order(names: Sequence[str]) -> List[str]:
    """Known datasets in DomainBed's order, then the others sorted; none is dropped."""
    names = set(names)
    known = _known_datasets()
    return [d for d in known if d in names] + sorted(n for n in names if n not in known)


def environment_names(dataset: str, n_envs: int, sweep: Optional["Sweep"] = None) -> List[str]:
    """Column names: the catalog's, upstream's, else those the runs recorded (`domain_names`,
    written by our trainer: DomainFolder's come from the data folder), else env0, env1, ..."""
    envs = catalog.DATASET_ENVIRONMENTS.get(dataset) or \
        UPSTREAM_DATASET_ENVIRONMENTS.get(dataset)
    if envs is None and sweep is not None:
        rows = np.flatnonzero(sweep.ckpts.meta["dataset"].to_numpy() == dataset)[:1]
        names = next(iter(sweep.records_at(rows).values()), {}).get("domain_names")
        if isinstance(names, list) and len(names) == n_envs and all(isinstance(n, str) for n in names):
            envs = names
    if envs is not None:
        return list(envs)
    return [f"env{i}" for i in range(n_envs)]


def parse_metrics(names: Optional[Sequence[str]]) -> Optional[List[str]]:
    if not names:
        return None
    out = []
    for name in (n.strip() for part in names for n in part.split(",")):
        if not name:
            continue
        if name not in METRICS:
            raise ConfigError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
        out.append(name)
    return out


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------

def index_selection(sel: pd.DataFrame) -> Dict[tuple, List[dict]]:
    """(dataset, algorithm) -> selected rows as dicts, sorted by trial seed then domain.

    Tables read cells from this plain index: a few thousand dict look-ups instead of a pandas
    filter per cell."""
    idx: Dict[tuple, List[dict]] = {}
    for r in sel.to_dict("records"):
        idx.setdefault((r["dataset"], r["algorithm"]), []).append(r)
    for rows in idx.values():
        rows.sort(key=lambda r: (r["trial_seed"], r.get("test_env", r.get("source", 0))))
    return idx


def _cells_by_env(idx, column: str, dataset: str, algorithms: List[str], env_col: str,
                  n_cols: int, fmt: str):
    """Rows [alg, cell per domain..., Avg]: mean +/- s.e. over trials per domain."""
    rows = []
    for alg in algorithms:
        recs = idx.get((dataset, alg), [])
        cells, means = [], []
        for e in range(n_cols):
            mean, _, cell = format_mean(_finite(r[column] for r in recs if r[env_col] == e),
                                        fmt)
            cells.append(cell)
            means.append(mean)
        rows.append([alg, *cells, format_avg(means)])
    return rows


def _finite(values) -> list:
    return [float(v) for v in values if v is not None and not (isinstance(v, float)
                                                              and math.isnan(v))]


def _trial_means(idx, column: str, dataset: str, alg: str) -> list:
    """Per trial seed (ascending): mean over the selected domains of `column`."""
    by_trial: Dict[int, list] = {}
    for r in idx.get((dataset, alg), []):
        by_trial.setdefault(r["trial_seed"], []).append(r[column])
    out = []
    for trial in sorted(by_trial):
        vals = _finite(by_trial[trial])
        if vals:
            out.append(float(np.mean(vals)))
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

class Report:
    def __init__(self, sweep: Sweep, methods, metrics: Optional[List[str]], fmt: str,
                 compare_to: Sequence[str] = ()):
        self.sweep, self.methods, self.fmt = sweep, methods, fmt
        self.compare_to = list(compare_to)
        self.ckpts = sweep.ckpts
        meta = self.ckpts.meta
        self.dg = meta[meta["task"] != SINGLE_SOURCE]
        self.ss = meta[meta["task"] == SINGLE_SOURCE]
        self.algorithms = algorithm_order(self.dg["algorithm"].tolist())
        self.datasets = dataset_order(self.dg["dataset"].unique().tolist())
        self.n_envs = {d: int(g["n_envs"].max()) for d, g in meta.groupby("dataset")}
        present = {"_".join(k.split("_")[2:]) for k in sweep.keys if k.count("_") >= 2}
        self.metrics = metrics if metrics is not None else [m for m in METRICS if m in present]
        self.selections = {m: m.select(self.ckpts) for m in methods}
        self._attach_metrics()
        self.index = {m: index_selection(sel) for m, sel in self.selections.items()}
        self.out: List[str] = []

    # ---------------------------------------------------------------------- metric values
    def _attach_metrics(self):
        extra = [m for m in self.metrics if m != "acc"]
        rows = np.unique(np.concatenate([s["row"].to_numpy(dtype=np.int64)
                                         for s in self.selections.values()] or [[]]))
        self.has_idtest = any(k.endswith("_idtest_acc") for k in self.sweep.keys)
        recs = self.sweep.records_at(rows) if ((extra or self.has_idtest) and len(rows)) else {}
        for method, sel in self.selections.items():
            r = sel["row"].to_numpy(dtype=np.int64)
            t = sel["test_env"].to_numpy(dtype=np.int64)
            n = self.ckpts.meta["n_envs"].to_numpy()[r] if len(r) else np.zeros(0, np.int64)
            sel["ood_acc"] = sel["test_acc"]
            # ID: the training domains' ID test splits where the run has them (never seen by
            # training or selection); else their validation splits, which selection maximised
            split = [id_split(recs.get(ri, {}), [j for j in range(ni) if j != ti])
                     for ri, ni, ti in zip(r, n, t)]
            sel["id_split"] = split
            sel["id_acc"] = [_mean_over(self.ckpts.acc_out[ri], ni, ti) if sp == "out" else
                             _nanmean([_num(recs[ri].get(f"env{j}_idtest_acc"))
                                       for j in range(ni) if j != ti])
                             for ri, ni, ti, sp in zip(r, n, t, split)]
            for m in extra:
                sel["ood_" + m] = [_num(recs.get(ri, {}).get(f"env{ti}_in_{m}"))
                                   for ri, ti in zip(r, t)]
                sel["id_" + m] = [_nanmean([_num(recs.get(ri, {}).get(f"env{j}_{sp}_{m}"))
                                            for j in range(ni) if j != ti])
                                  for ri, ni, ti, sp in zip(r, n, t, split)]

    def id_what(self, dataset: str, method=None) -> str:
        """What the ID numbers of a dataset are: the ID test split, or (runs without one) the
        selection split, named as optimistic in the table itself."""
        splits = set()
        for m in ([method] if method is not None else self.methods):
            splits |= {r["id_split"] for rows in (v for k, v in self.index[m].items()
                                                  if k[0] == dataset) for r in rows}
        if splits == {"idtest"}:
            return "the ID test split"
        if splits <= {"out"}:
            return "the selection split (optimistic)"
        return "the ID test split where recorded, else the selection split (mixed)"

    # ---------------------------------------------------------------------- output helpers
    def emit(self, text: str):
        self.out.append(text)

    def table(self, title, columns, rows, colwidth, latex_title=None):
        self.emit(Table(title, columns, rows, colwidth, latex_title).render(self.fmt))

    def heading(self, text: str, level: int):
        if self.fmt == "latex":
            cmd = {1: "section", 2: "subsection", 3: "subsubsection"}[level]
            from domainbed_align.lib.tables import latex_escape
            self.emit("\n\\" + cmd + "{" + latex_escape(text) + "}\n")
        elif self.fmt == "markdown":
            self.emit("\n" + "#" * (level + 1) + " " + text + "\n")
        else:
            self.emit("\n" + ("=" * 8 if level == 1 else "=" * 4) + " " + text + "\n")

    # ---------------------------------------------------------------------- sections
    def domainbed(self):
        latex = self.fmt == "latex"
        if latex:
            self.emit("\\documentclass{article}\n\\usepackage{booktabs}\n"
                      "\\usepackage{adjustbox}\n\\begin{document}\n"
                      "\\section{Full DomainBed results}\n"
                      f"% Total records: {len(self.dg)}\n")
        elif self.fmt == "markdown":
            self.emit(f"# DomainBed results\n\nTotal records: {len(self.dg)}\n")
        else:
            self.emit(f"Total records: {len(self.dg)}\n")
        for method in self.methods:
            sel = self.index[method]
            if latex:
                self.emit(f"\n\\subsection{{Model selection: {method.name}}}\n")
            elif self.fmt == "markdown":
                self.emit(f"\n## Model selection: {method.name}\n")
            for ds in self.datasets:
                envs = environment_names(ds, self.n_envs[ds], self.sweep)
                rows = _cells_by_env(sel, "test_acc", ds, self.algorithms, "test_env",
                                     len(envs), self.fmt)
                self.table(f"Dataset: {ds}, model selection method: {method.name}",
                           ["Algorithm", *envs, "Avg"], rows, 20, latex_title=ds)
            rows = []
            for alg in self.algorithms:
                cells, means = [], []
                for ds in self.datasets:
                    mean, _, cell = format_mean(_trial_means(sel, "test_acc", ds, alg),
                                                self.fmt)
                    cells.append(cell)
                    means.append(mean)
                rows.append([alg, *cells, format_avg(means)])
            self.table(f"Averages, model selection method: {method.name}",
                       ["Algorithm", *self.datasets, "Avg"], rows, 25,
                       latex_title="Averages")

    def id_ood(self):
        if not self.datasets:
            return
        self.heading("ID/OOD accuracy of the selected models (OOD: test domain; ID: mean over "
                     "the training domains' ID test splits, or where runs have none their "
                     "validation splits, which selection maximised: optimistic)", 1)
        for method in self.methods:
            sel = self.index[method]
            for ds in self.datasets:
                envs = environment_names(ds, self.n_envs[ds], self.sweep)
                for col, what in (("ood_acc", "OOD test-domain accuracy"),
                                  ("id_acc", "ID training-domain accuracy on "
                                   + self.id_what(ds, method))):
                    rows = _cells_by_env(sel, col, ds, self.algorithms, "test_env", len(envs),
                                         self.fmt)
                    self.table(f"Dataset: {ds}, model selection method: {method.name}, {what}",
                               ["Algorithm", *envs, "Avg"], rows, 20,
                               latex_title=f"{ds}, {method.name}, {what}")
            cols, rows = ["Algorithm"], []
            for ds in self.datasets:
                cols += [f"{ds} OOD", f"{ds} ID"]
            cols += ["Avg OOD", "Avg ID"]
            for alg in self.algorithms:
                cells, means = [], {"ood_acc": [], "id_acc": []}
                for ds in self.datasets:
                    for col in ("ood_acc", "id_acc"):
                        mean, _, cell = format_mean(_trial_means(sel, col, ds, alg), self.fmt)
                        cells.append(cell)
                        means[col].append(mean)
                rows.append([alg, *cells, format_avg(means["ood_acc"]),
                             format_avg(means["id_acc"])])
            self.table(f"Averages, model selection method: {method.name}, ID and OOD",
                       cols, rows, 25, latex_title=f"Averages, {method.name}, ID and OOD")

    def explanations(self):
        extra = [m for m in self.metrics if m != "acc"]
        if not extra or not self.datasets:
            return
        shown = ["acc"] + extra
        arrows = _LATEX_ARROWS if self.fmt == "latex" else _ARROWS
        self.heading("Explanations and prediction AUC of the selected models (x100, mean "
                     "+/- s.e. over trials of the mean over test domains; "
                     + ", ".join(f"{m}: {METRICS[m][0]}" for m in shown) + ")", 1)
        cols = ["Algorithm"] + [f"{m} {arrows[METRICS[m][1]]}" for m in shown]
        for method in self.methods:
            sel = self.index[method]
            for ds in self.datasets:
                for split, what in (("ood", "test domain"),
                                    ("id", "training domains, " + self.id_what(ds, method))):
                    rows = []
                    for alg in self.algorithms:
                        cells = [format_mean(_trial_means(sel, f"{split}_{m}", ds, alg),
                                             self.fmt)[2] for m in shown]
                        rows.append([alg, *cells])
                    self.table(f"Explanations: {ds}, model selection method: {method.name}, "
                               f"{what}", cols, rows, 20,
                               latex_title=f"Explanations, {ds}, {method.name}, {what}")

    def single_source(self):
        if len(self.ss) == 0:
            return
        self.heading(f"Single-source protocol: train on one domain, test on the others "
                     f"({len(self.ss)} records)", 1)
        algs = algorithm_order(self.ss["algorithm"].tolist())
        dsets = dataset_order(self.ss["dataset"].unique().tolist())
        for method in self.methods:
            sel = method.select_single_source(self.ckpts)
            if sel is None:
                self.emit(_note(self.fmt, f"model selection method {method.name}: not "
                                "applicable to single-source runs (one training domain)"))
                continue
            r = sel["row"].to_numpy(dtype=np.int64)
            s = sel["source"].to_numpy(dtype=np.int64)
            recs = self.sweep.records_at(r) if (self.has_idtest and len(r)) else {}

            def id_accs(rows, src):
                """The source's ID test accuracy where recorded, else its validation one."""
                vals = [recs.get(ri, {}).get(f"env{src}_idtest_acc") for ri in rows]
                what = "ID: the ID test split" if vals and all(v is not None for v in vals) \
                    else "ID: the selection split (optimistic)" if not any(
                        v is not None for v in vals) else "ID: mixed splits"
                return _finite(self.ckpts.acc_out[ri, src] if v is None else v
                               for ri, v in zip(rows, vals)), what

            for ds in dsets:
                ne = self.n_envs[ds]
                envs = environment_names(ds, ne, self.sweep)
                sub_idx = np.flatnonzero(sel["dataset"].to_numpy() == ds)
                for alg in algs:
                    rows = []
                    for src in range(ne):
                        pick = [i for i in sub_idx if sel["algorithm"].iat[i] == alg
                                and s[i] == src]
                        pick.sort(key=lambda i: sel["trial_seed"].iat[i])
                        cells = []
                        for tgt in range(ne):
                            if tgt == src:
                                cells.append("-")
                            else:
                                cells.append(format_mean(
                                    _finite(self.ckpts.acc_in[r[pick], tgt]), self.fmt)[2])
                        accs, what = id_accs(r[pick], src)
                        cells.append(format_mean(accs, self.fmt)[2])
                        rows.append([envs[src], *cells])
                    self.table(f"Single source: {ds}, {alg}, model selection method: "
                               f"{method.name} (rows: source, columns: target; {what})",
                               ["Source", *envs, "ID"], rows, 20,
                               latex_title=f"Single source, {ds}, {alg}, {method.name}")
                cols = ["Algorithm"]
                for e in envs:
                    cols += [f"{e} OOD", f"{e} ID"]
                cols += ["Avg OOD", "Avg ID"]
                rows = []
                for alg in algs:
                    cells, ood_means, id_means = [], [], []
                    for src in range(ne):
                        pick = [i for i in sub_idx if sel["algorithm"].iat[i] == alg
                                and s[i] == src]
                        pick.sort(key=lambda i: sel["trial_seed"].iat[i])
                        ood = [_mean_over(self.ckpts.acc_in[r[i]], ne, src) for i in pick]
                        mean, _, cell = format_mean(_finite(ood), self.fmt)
                        cells.append(cell)
                        ood_means.append(mean)
                        accs, what = id_accs(r[pick], src)
                        mean, _, cell = format_mean(accs, self.fmt)
                        cells.append(cell)
                        id_means.append(mean)
                    rows.append([alg, *cells, format_avg(ood_means), format_avg(id_means)])
                self.table(f"Single source: {ds}, model selection method: {method.name}, "
                           f"mean OOD over targets and ID per source ({what})", cols, rows, 20,
                           latex_title=f"Single source, {ds}, {method.name}, compact")

    def comparisons(self):
        """Paired differences to each `--compare_to` reference (lib/paired.py): per selection
        method and dataset, every other algorithm's mean difference over pairs (same trial
        seed and test domain), its 95% Student-t interval and the number of pairs."""
        if not self.compare_to or not self.datasets:
            return
        shown = [m for m in self.metrics if m != "acc"]
        arrows = _LATEX_ARROWS if self.fmt == "latex" else _ARROWS
        self.heading("Paired differences to " + ", ".join(self.compare_to) + " (x100; algorithm "
                     "minus reference over pairs of runs with the same trial seed and test "
                     "domain; [95% interval, Student t]; an interval that covers 0 is no "
                     "measurable difference)", 1)
        for method in self.methods:
            sel = self.index[method]
            for ds in self.datasets:
                for ref in self.compare_to:
                    for ref_label, rows in comparison_rows(sel, ds, self.algorithms, ref):
                        title = f"{ds}, model selection method: {method.name}"
                        cells = []
                        for alg in rows:
                            ood = compare_column(sel, ds, alg, ref_label, "ood_acc")
                            idd = compare_column(sel, ds, alg, ref_label, "id_acc")
                            cells.append([alg, format_difference(ood[0]),
                                          format_difference(idd[0]),
                                          str(ood[0].n if ood[0] else 0)])
                            for what, keys in (("no partner in " + ref_label, ood[1]),
                                               ("no partner in " + alg, ood[2])):
                                if keys:
                                    self.emit(_note(self.fmt, f"unpaired, left out: {alg} vs "
                                                    f"{ref_label} ({method.name}, {ds}): "
                                                    f"{len(keys)} run(s) with {what}: "
                                                    + ", ".join(f"trial {t} test env {e}"
                                                                for t, e in keys[:5])
                                                    + (" ..." if len(keys) > 5 else "")))
                        self.table(f"Paired differences to {ref_label}: {title} (ID: "
                                   f"{self.id_what(ds, method)})",
                                   ["Algorithm", "OOD acc", "ID acc", "pairs"],
                                   cells, max([22] + [len(a) + 1 for a in rows]), latex_title=f"Paired differences to "
                                   f"{ref_label}, {ds}, {method.name}")
                        for split, where in (("ood", "test domain"), ("id", "training domains")):
                            if not shown:
                                break
                            for chunk in range(0, len(rows), 4):
                                algs = rows[chunk:chunk + 4]
                                table_rows = [[f"{m} {arrows[METRICS[m][1]]}"] + [
                                    format_difference(compare_column(
                                        sel, ds, a, ref_label, f"{split}_{m}")[0])
                                    for a in algs] for m in shown]
                                table_rows = [r for r in table_rows if set(r[1:]) != {"X"}]
                                if not table_rows:
                                    continue
                                self.table(f"Paired differences to {ref_label} in explanation "
                                           f"metrics, {where}: {title}",
                                           ["Metric", *algs], table_rows,
                                           max([22] + [len(a) + 1 for a in algs]),
                                           latex_title=f"Paired explanation differences to "
                                           f"{ref_label}, {where}, {ds}, {method.name}")

    def render(self) -> str:
        self.domainbed()
        self.id_ood()
        self.explanations()
        self.comparisons()
        self.single_source()
        if self.fmt == "latex":
            self.emit("\\end{document}\n")
        return "".join(self.out)

    def csv_frame(self) -> pd.DataFrame:
        frames = []
        names = np.array(self.sweep.run_names, dtype=object)
        for method, sel in self.selections.items():
            f = sel.copy()
            f.insert(0, "selection", method.key)
            f["run"] = names[self.ckpts.meta["run"].to_numpy()[f["row"].to_numpy(dtype=np.int64)]] \
                if len(f) else []
            frames.append(f.drop(columns=["row", "test_acc"]))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def comparison_rows(idx, dataset: str, algorithms: List[str], reference: str):
    """[(reference label, algorithms compared to it)]. A plain name is one reference for every
    other algorithm; `[k=v]` (a `--split_by` value) is, for each algorithm with a variant
    carrying k=v, that variant as the reference of the algorithm's other variants."""
    present = [a for a in algorithms if (dataset, a) in idx]
    if not reference.startswith("["):
        if reference not in present:
            return []
        return [(reference, [a for a in present if a != reference])]
    want = set(reference.strip("[]").split(","))
    out = []
    for base in dict.fromkeys(base_algorithm(a) for a in present):
        variants = [a for a in present if base_algorithm(a) == base]
        refs = [a for a in variants
                if want <= set(a[len(base):].strip("[]").split(","))]
        if len(refs) == 1:
            out.append((refs[0], [a for a in variants if a != refs[0]]))
    return out


def compare_column(idx, dataset: str, alg: str, reference: str, column: str):
    """(PairedDifference or None, keys only alg has, keys only the reference has) of `column`
    between two algorithms' selected rows, paired by (trial seed, test domain)."""
    def by_pair(a):
        return {(r["trial_seed"], r["test_env"]): _num(r.get(column))
                for r in idx.get((dataset, a), [])}
    diffs, only_alg, only_ref = pair_up(by_pair(alg), by_pair(reference))
    return paired_difference(diffs), only_alg, only_ref


def check_references(compare_to: Sequence[str], algorithms: Sequence[str]) -> None:
    """One line for a --compare_to name that names no algorithm (or variant) of the sweep."""
    for ref in compare_to:
        if ref.startswith("["):
            want = set(ref.strip("[]").split(","))
            if any(want <= set(a[len(base_algorithm(a)):].strip("[]").split(","))
                   for a in algorithms if "[" in a):
                continue
        elif ref in algorithms:
            continue
        raise ConfigError(f"--compare_to {ref!r} is not an algorithm of this sweep; known: "
                          + ", ".join(algorithms) + " (or a variant value [name=value] with "
                          "--split_by)")


def id_split(record: dict, train_envs: Sequence[int]) -> str:
    """'idtest' when the record has an ID test accuracy for every training domain, else 'out'."""
    ok = train_envs and all(record.get(f"env{j}_idtest_acc") is not None for j in train_envs)
    return "idtest" if ok else "out"


def _num(x) -> float:
    if x is None or isinstance(x, bool):
        return float("nan")
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _nanmean(vals) -> float:
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _mean_over(row: np.ndarray, n_envs: int, skip: int) -> float:
    return _nanmean([float(row[j]) for j in range(int(n_envs)) if j != skip])


def _note(fmt, text):
    return ("\n% " if fmt == "latex" else "\n") + text + "\n"


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m domainbed_align.collect_results",
        description="DomainBed tables, ID/OOD tables and explanation tables of a sweep folder.")
    p.add_argument("--input_dir", required=True, help="the sweep's output folder")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--latex", action="store_true", help="LaTeX document -> results.tex")
    fmt.add_argument("--markdown", action="store_true", help="markdown -> results.md")
    p.add_argument("--csv", help="also write the selected models, one row each, to this file")
    p.add_argument("--selection", nargs="+",
                   help="selection methods (training_domain|iid, leave_one_out|loo, oracle); "
                        "default all three")
    p.add_argument("--metrics", nargs="+",
                   help="metrics of the explanation tables (default: all recorded): "
                        + ", ".join(METRICS))
    p.add_argument("--include_incomplete", action="store_true",
                   help="also use runs without a 'done' file")
    p.add_argument("--compare_to", nargs="+", metavar="ALG", default=[],
                   help="also print paired differences to these algorithms (same trial seed "
                        "and test domain) with 95%% Student-t intervals; [name=value] compares "
                        "each algorithm's --split_by variants to its variant with that value")
    p.add_argument("--split_by", nargs="+", metavar="HPARAM", default=[],
                   help="treat the values a grid sweep sets for these hparams as algorithms of "
                        "their own, e.g. RES[res_target_rescale=false]")
    p.add_argument("--workers", type=int, default=None,
                   help="processes reading results.jsonl files (default: CPU count, max 8)")
    p.add_argument("--no_cache", action="store_true",
                   help="parse every results.jsonl again; do not read or write "
                        "<input_dir>/_collect_cache.npz")
    p.add_argument("--no_write", action="store_true",
                   help="print only; do not write results.txt/.tex/.md (nor update the cache) "
                        "into input_dir")
    p.add_argument("--figures", metavar="DIR",
                   help="also write PNG figures into DIR: ood_vs_id.png, comp_vs_suff.png "
                        "(training-domain validation selection), over_training.png (when "
                        "records carry learned-mask densities), <metric>_vs_<hparam>.png")
    p.add_argument("--figures_vs", nargs="+", metavar="HPARAM", default=[],
                   help="with --figures: for grid sweeps (hparams_seed 0), the test-domain "
                        "metric of each run's last record against this hparam, one line per "
                        "algorithm")
    p.add_argument("--figures_metric", default="acc", metavar="NAME",
                   help="metric of the --figures_vs figures (default acc): " + ", ".join(METRICS))
    return p


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _ArgumentError(message)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    parser.__class__ = _Parser
    try:
        args = parser.parse_args(argv)
        methods = get_selection_methods(args.selection)
        metrics = parse_metrics(args.metrics)
        if metrics is not None and "acc" not in metrics:
            metrics = ["acc"] + metrics
        if (args.figures_vs or args.figures_metric != "acc") and not args.figures:
            raise ConfigError("--figures_vs and --figures_metric need --figures DIR (the "
                              "folder the figures go to)")
        parse_metrics([args.figures_metric])
        t0 = time.perf_counter()
        sweep = Sweep(args.input_dir, args.include_incomplete, args.workers,
                      use_cache=not args.no_cache, write_cache=not args.no_write)
        sweep.split_by(args.split_by)
        if args.compare_to:
            check_references(args.compare_to,
                             algorithm_order(sweep.ckpts.meta["algorithm"].tolist()))
        figures = None
        if args.figures:   # gathered before any output, so a bad --figures_vs is one line
            from domainbed_align import figures as figures_module
            figures = figures_module.SweepFigures(
                sweep, Report(sweep, get_selection_methods(["training_domain"]), None, "text",
                              args.compare_to),
                args.figures_vs, args.figures_metric)
    except _ArgumentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DomainBedAlignError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fmt = "latex" if args.latex else "markdown" if args.markdown else "text"
    for w in sweep.warnings():
        print(w, file=sys.stderr)
    # an unchanged sweep asked the same question: the last answer, without selection or layout
    key = report_key(sweep.ckpts_key, fmt, [m.key for m in methods], metrics,
                     args.include_incomplete, sweep.warnings(), args.compare_to, args.split_by)
    text = None if (args.no_cache or args.csv) else cached_report(args.input_dir, key)
    if text is None:
        report = Report(sweep, methods, metrics, fmt, args.compare_to)
        text = report.render()
        if not args.no_cache and not args.no_write:
            save_report(args.input_dir, key, text)
    sys.stdout.write(text)
    sys.stdout.flush()
    if len(sweep.ckpts) == 0:
        print(f"nothing to report: no usable records in {args.input_dir}", file=sys.stderr)
    if not args.no_write:
        name = {"text": "results.txt", "latex": "results.tex", "markdown": "results.md"}[fmt]
        try:
            from domainbed_align.lib.misc import atomic_write_text
            atomic_write_text(os.path.join(args.input_dir, name), text)
        except OSError as e:
            print(f"warning: could not write {name} into {args.input_dir}: {e}",
                  file=sys.stderr)
    if args.csv:
        report.csv_frame().to_csv(args.csv, index=False)
    if figures is not None:
        try:
            paths = figures.write(args.figures)
        except OSError as e:
            print(f"error: could not write figures into {args.figures}: {e}", file=sys.stderr)
            return 2
        print(f"wrote {len(paths)} figure(s) into {args.figures}: "
              + ", ".join(os.path.basename(p) for p in paths), file=sys.stderr)
    print(f"collected {len(sweep.ckpts)} records from {len(sweep.run_names)} runs in "
          f"{time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
