"""The selected models of a sweep, per selection method, with the metrics each table shows.

`Selected` runs every selection method once and attaches to each selected model its ID and
OOD accuracy and, where recorded, each explanation metric (`ood_<m>` on the test domain,
`id_<m>` the mean over the training domains' held-out splits). Tables, figures and the page
read the same plain index, so they cannot disagree.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from domainbed_align.lib.tables import format_mean
from domainbed_align.model_selection import SINGLE_SOURCE
from domainbed_align.report.names import METRICS, algorithm_order, dataset_order
from domainbed_align.report.records import Sweep


def num(x) -> float:
    """A record value as a float; NaN for anything that is not a number."""
    if x is None or isinstance(x, bool):
        return float("nan")
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def nanmean(vals) -> float:
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def mean_over(row: np.ndarray, n_envs: int, skip: int) -> float:
    """Mean of row[j] over the domains j < n_envs other than `skip` (NaN ignored)."""
    return nanmean([float(row[j]) for j in range(int(n_envs)) if j != skip])


def finite(values) -> list:
    return [float(v) for v in values if v is not None and not (isinstance(v, float)
                                                              and math.isnan(v))]


def mean_se(values: Sequence[float]) -> Tuple[float, float, int]:
    """(mean, standard error, n) of the finite values; the tables' formula. NaN when none."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return float("nan"), float("nan"), 0
    mean, se, _ = format_mean(vals, scale=1.0)
    return float(mean), float(se), len(vals)


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


def trial_means(idx, column: str, dataset: str, alg: str,
                n_test_envs: Optional[int] = None) -> list:
    """Per trial seed (ascending): mean over the selected domains of `column`.

    With `n_test_envs`, only trials that have a finite value on every test domain
    0..n_test_envs-1 count: a trial missing its hard domain would otherwise look better."""
    by_trial: Dict[int, dict] = {}
    for r in idx.get((dataset, alg), []):
        by_trial.setdefault(r["trial_seed"], {}).setdefault(r["test_env"], []).append(r[column])
    out = []
    for trial in sorted(by_trial):
        per_env = {e: finite(v) for e, v in by_trial[trial].items()}
        if n_test_envs is not None and \
                any(not per_env.get(e) for e in range(n_test_envs)):
            continue
        vals = [v for e in sorted(per_env) for v in per_env[e]] if n_test_envs is None else \
            [v for e in range(n_test_envs) for v in per_env[e]]
        if vals:
            out.append(float(np.mean(vals)))
    return out


def missing_envs(idx, column: str, dataset: str, alg: str, n_test_envs: int) -> List[int]:
    """Test domains without any finite selected value (the table prints X there)."""
    have = {r["test_env"] for r in idx.get((dataset, alg), []) if finite([r[column]])}
    return [e for e in range(n_test_envs) if e not in have]


def id_split(record: dict, train_envs: Sequence[int]) -> str:
    """'idtest' when the record has an ID test accuracy for every training domain, else 'out'."""
    ok = train_envs and all(record.get(f"env{j}_idtest_acc") is not None for j in train_envs)
    return "idtest" if ok else "out"


class Selected:
    """Every selection method's selected models of a sweep, with their metrics attached.

    `metrics` None: every metric the records carry, in METRICS order. `compare_to`: the
    reference algorithms of the paired comparisons (`comparisons`)."""

    def __init__(self, sweep: Sweep, methods, metrics: Optional[List[str]],
                 compare_to: Sequence[str] = ()):
        self.sweep, self.methods = sweep, methods
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
            sel["id_acc"] = [mean_over(self.ckpts.acc_out[ri], ni, ti) if sp == "out" else
                             nanmean([num(recs[ri].get(f"env{j}_idtest_acc"))
                                      for j in range(ni) if j != ti])
                             for ri, ni, ti, sp in zip(r, n, t, split)]
            for m in extra:
                sel["ood_" + m] = [num(recs.get(ri, {}).get(f"env{ti}_in_{m}"))
                                   for ri, ti in zip(r, t)]
                sel["id_" + m] = [nanmean([num(recs.get(ri, {}).get(f"env{j}_{sp}_{m}"))
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

    def csv_frame(self) -> pd.DataFrame:
        """The selected models, one row each; counts and indices stay integers."""
        frames = []
        names = np.array(self.sweep.run_names, dtype=object)
        for method, sel in self.selections.items():
            f = sel.copy()
            f.insert(0, "selection", method.key)
            f["run"] = names[self.ckpts.meta["run"].to_numpy()[f["row"].to_numpy(dtype=np.int64)]] \
                if len(f) else []
            frames.append(f.drop(columns=["row", "test_acc"]))
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        for col in ("trial_seed", "test_env", "hparams_seed", "step"):
            if col in out.columns and len(out):
                out[col] = out[col].astype(np.int64)
        return out
