"""DomainBed's three model-selection methods (compat section 7), vectorised, plus single-source.

Each method is a classmethod-only class whose `name` is the table title (DomainBed). Two paths:
- `select(ckpts)`: numpy/pandas over a `Checkpoints` table, what the collector uses (100k
  records in well under a second);
- `sweep_acc(records)` / `run_acc(...)`: the same rule read straight off the records with the
  `Q` query layer, DomainBed's API, kept as the readable statement of the rule.

Ties follow DomainBed: inside one hparams setting the first best checkpoint wins (record order;
for leave-one-domain-out, the earliest step); across hparams the later (larger) hparams_seed
wins. A NaN validation accuracy ranks below every number.

No torch import here or in anything this module imports.
"""
import dataclasses
import itertools
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from domainbed_align.lib.errors import ConfigError
from domainbed_align.lib.query import Q

SINGLE_SOURCE = "single_source"
DOMAIN_GENERALIZATION = "domain_generalization"


# --------------------------------------------------------------------------------------------
# The checkpoint table
# --------------------------------------------------------------------------------------------

def env_count(record: dict) -> int:
    """Number of domains in a record: env0_out_acc, env1_out_acc, ... until one is missing."""
    n = 0
    while f"env{n}_out_acc" in record:
        n += 1
    return n


def _float(x) -> float:
    return np.nan if x is None else float(x)


def record_arrays(records: Sequence[dict]):
    """(steps, n_envs, acc_in, acc_out) of a list of records, accuracies NaN where absent."""
    n = len(records)
    n_envs = np.fromiter((env_count(r) for r in records), dtype=np.int64, count=n)
    width = int(n_envs.max()) if n else 0
    acc_in = np.full((n, width), np.nan)
    acc_out = np.full((n, width), np.nan)
    for k, r in enumerate(records):
        for i in range(n_envs[k]):
            acc_in[k, i] = _float(r.get(f"env{i}_in_acc"))
            acc_out[k, i] = _float(r[f"env{i}_out_acc"])
    steps = np.fromiter((int(r.get("step", -1) if r.get("step") is not None else -1)
                         for r in records), dtype=np.int64, count=n)
    return steps, n_envs, acc_in, acc_out


@dataclasses.dataclass
class RunPart:
    """Consecutive records that share one `args` dict (one run, usually)."""
    args: dict
    steps: np.ndarray
    n_envs: np.ndarray
    acc_in: np.ndarray
    acc_out: np.ndarray
    run: int = -1          # index of the run folder (collector) or -1
    lines: Optional[np.ndarray] = None   # line index of each record in its file


def run_meta(args) -> Optional[dict]:
    """The selection keys of a run's args, or None when the run cannot be placed in a table."""
    if not isinstance(args, dict):
        return None
    test_envs = args.get("test_envs")
    if args.get("algorithm") is None or args.get("dataset") is None or not test_envs:
        return None
    try:
        test_envs = [int(t) for t in test_envs]
    except (TypeError, ValueError):
        return None
    return {
        "algorithm": str(args["algorithm"]),
        "dataset": str(args["dataset"]),
        "test_envs": test_envs,
        "trial_seed": int(args.get("trial_seed") or 0),
        "hparams_seed": int(args.get("hparams_seed") or 0),
        "task": str(args.get("task") or DOMAIN_GENERALIZATION),
    }


@dataclasses.dataclass
class Checkpoints:
    """One row per record. `meta` columns: run, line, trial_seed, dataset, algorithm,
    hparams_seed, task, step, n_envs, n_test, test_env0, test_env1, source (the training
    domain of a single-source run, else -1). `acc_in` / `acc_out`: (N, E) env{i}_{in,out}_acc."""
    meta: pd.DataFrame
    acc_in: np.ndarray
    acc_out: np.ndarray
    n_unusable: int = 0   # records whose args lack algorithm, dataset or test_envs

    def __len__(self):
        return len(self.meta)

    @classmethod
    def from_parts(cls, parts: Sequence[RunPart]) -> "Checkpoints":
        cols: Dict[str, list] = {k: [] for k in (
            "run", "line", "trial_seed", "dataset", "algorithm", "hparams_seed", "task",
            "step", "n_envs", "n_test", "test_env0", "test_env1", "source")}
        blocks_in, blocks_out, n_unusable = [], [], 0
        width = max((p.acc_in.shape[1] for p in parts), default=0)
        for p in parts:
            n = len(p.steps)
            m = run_meta(p.args)
            if m is None or n == 0:
                n_unusable += n
                continue
            te = m["test_envs"]
            source = -1
            if m["task"] == SINGLE_SOURCE:
                train = set(range(int(p.n_envs.max()))) - set(te)
                if len(train) != 1:
                    n_unusable += n
                    continue
                source = train.pop()
            for key, value in (("trial_seed", m["trial_seed"]), ("dataset", m["dataset"]),
                               ("algorithm", m["algorithm"]),
                               ("hparams_seed", m["hparams_seed"]), ("task", m["task"]),
                               ("run", p.run), ("n_test", len(te)), ("test_env0", te[0]),
                               ("test_env1", te[1] if len(te) > 1 else -1),
                               ("source", source)):
                cols[key].append(np.repeat(np.array([value], dtype=object
                                                    if isinstance(value, str) else np.int64), n))
            cols["step"].append(p.steps)
            cols["n_envs"].append(p.n_envs)
            cols["line"].append(p.lines if p.lines is not None else np.arange(n))
            pad = width - p.acc_in.shape[1]
            blocks_in.append(np.pad(p.acc_in, ((0, 0), (0, pad)), constant_values=np.nan))
            blocks_out.append(np.pad(p.acc_out, ((0, 0), (0, pad)), constant_values=np.nan))
        if not blocks_in:
            meta = pd.DataFrame({k: pd.Series([], dtype=object if k in (
                "dataset", "algorithm", "task") else np.int64) for k in cols})
            return cls(meta, np.zeros((0, width)), np.zeros((0, width)), n_unusable)
        meta = pd.DataFrame({k: np.concatenate(v) for k, v in cols.items()})
        return cls(meta, np.concatenate(blocks_in), np.concatenate(blocks_out), n_unusable)

    @classmethod
    def from_records(cls, records: Sequence[dict]) -> "Checkpoints":
        """Build from record dicts in memory (each record keeps its own args)."""
        parts = []
        for i, r in enumerate(records):
            steps, n_envs, acc_in, acc_out = record_arrays([r])
            parts.append(RunPart(r.get("args"), steps, n_envs, acc_in, acc_out, run=i,
                                 lines=np.zeros(1, dtype=np.int64)))
        return cls.from_parts(parts)


# --------------------------------------------------------------------------------------------
# Vectorised selection
# --------------------------------------------------------------------------------------------

RESULT_COLUMNS = ["trial_seed", "dataset", "algorithm", "test_env", "hparams_seed", "step",
                  "row", "val_acc", "test_acc"]


def packed_mean(values: np.ndarray, n_envs: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """Row-wise mean of values[r, j] for j < n_envs[r], j != skip[r].

    Summed left to right exactly like `np.mean` of the Python list DomainBed builds, so the
    result is bit-identical and ties break the same way.
    """
    out = np.full(len(values), np.nan)
    for ne in np.unique(n_envs):
        sel = np.flatnonzero(n_envs == ne)
        if ne < 2 or len(sel) == 0:
            continue
        j = np.arange(ne - 1)
        cols = j[None, :] + (j[None, :] >= skip[sel, None])      # (rows, ne-1), skips `skip`
        packed = values[sel[:, None], cols]
        out[sel] = packed.sum(axis=1) / (ne - 1)
    return out


def _group_ids(frame: pd.DataFrame, cols: List[str]) -> np.ndarray:
    if len(frame) == 0:
        return np.zeros(0, dtype=np.int64)
    return frame.groupby(cols, sort=True, dropna=False).ngroup().to_numpy()


def _first_per(keys: Sequence[np.ndarray]) -> np.ndarray:
    """Mask of the first row of each run of equal keys (keys already sorted)."""
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, dtype=bool)
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for k in keys:
        new[1:] |= k[1:] != k[:-1]
    return new


def pick(frame: pd.DataFrame, group_cols: List[str], val: np.ndarray,
         order: np.ndarray) -> np.ndarray:
    """Positions (into `frame`) of the selected checkpoint of each group.

    Per (group, hparams_seed): the highest `val`, ties to the smallest `order`; then per group
    the hparams with the highest val, ties to the larger hparams_seed.
    """
    if len(frame) == 0:
        return np.zeros(0, dtype=np.int64)
    g = _group_ids(frame, group_cols)
    h = frame["hparams_seed"].to_numpy()
    v = np.where(np.isnan(val), -np.inf, val)
    idx = np.lexsort((order, -v, h, g))
    win = idx[_first_per([g[idx], h[idx]])]
    idx2 = win[np.lexsort((-h[win], -v[win], g[win]))]
    return idx2[_first_per([g[idx2]])]


def _result(frame, pos, test_env, val, test) -> pd.DataFrame:
    out = frame.iloc[pos][["trial_seed", "dataset", "algorithm", "hparams_seed", "step"]]
    out = out.reset_index(drop=True)
    out.insert(3, "test_env", test_env[pos])
    out["row"] = frame.index.to_numpy()[pos]
    out["val_acc"] = val[pos]
    out["test_acc"] = test[pos]
    return out.sort_values(["dataset", "algorithm", "test_env", "trial_seed"],
                           kind="stable").reset_index(drop=True)


def _empty_result() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in RESULT_COLUMNS})


def _dg(ckpts: Checkpoints) -> pd.DataFrame:
    """Domain-generalisation rows whose test domains the record has: a run naming domain 5
    of a 3-domain dataset has no accuracy to select on (and must not index past the table)."""
    m = ckpts.meta
    n = m["n_envs"]
    inside = (m["test_env0"] >= 0) & (m["test_env0"] < n) & \
        ((m["n_test"] < 2) | ((m["test_env1"] >= 0) & (m["test_env1"] < n)))
    return m[(m["task"] != SINGLE_SOURCE) & inside]


class SelectionMethod:
    """Strategy for picking (hparams, checkpoint) per trial, dataset, algorithm, test domain."""
    name = ""
    key = ""

    def __init__(self):
        raise TypeError("selection methods are used through their classmethods")

    # vectorised ------------------------------------------------------------------------
    @classmethod
    def select(cls, ckpts: Checkpoints) -> pd.DataFrame:
        """One row per (trial_seed, dataset, algorithm, test_env): RESULT_COLUMNS, where
        `row` is the meta index of the selected single-test-domain record."""
        raise NotImplementedError

    @classmethod
    def select_single_source(cls, ckpts: Checkpoints) -> Optional[pd.DataFrame]:
        """Per (trial_seed, dataset, algorithm, source): the selected record; None when the
        method does not apply to single-source runs."""
        return None

    # Q-based (DomainBed API) -------------------------------------------------------------
    @classmethod
    def run_acc(cls, run_records: Q) -> Optional[dict]:
        raise NotImplementedError

    @classmethod
    def hparams_accs(cls, records: Q) -> Q:
        """[(run_acc, records)] per hparams_seed, best val first (ties: later seed first)."""
        accs = (records.group("args.hparams_seed")
                .map(lambda _, run_records: (cls.run_acc(run_records), run_records))
                .filter(lambda x: x[0] is not None))
        return Q(reversed(accs.sorted(key=lambda x: x[0]["val_acc"]).list()))

    @classmethod
    def sweep_acc(cls, records: Q) -> Optional[float]:
        """Test accuracy of the selected model, records of one (dataset, algorithm, test env)."""
        accs = cls.hparams_accs(records)
        return accs[0][0]["test_acc"] if len(accs) else None


def _single_test(records: Q) -> Q:
    return records.filter(lambda r: len(r["args"]["test_envs"]) == 1)


def _single_test_rows(ckpts):
    """Domain-generalisation checkpoints of runs with one test domain: (meta, rows, test env)."""
    m = _dg(ckpts)
    m = m[m["n_test"] == 1]
    return m, m.index.to_numpy(), m["test_env0"].to_numpy()


class IIDAccuracySelectionMethod(SelectionMethod):
    """Training-domain validation: argmax of mean env{j}_out_acc over training domains."""
    name = "training-domain validation set"
    key = "training_domain"

    @classmethod
    def select(cls, ckpts):
        m, rows, t = _single_test_rows(ckpts)
        if len(m) == 0:
            return _empty_result()
        val = packed_mean(ckpts.acc_out[rows], m["n_envs"].to_numpy(), t)
        test = ckpts.acc_in[rows, t]
        pos = pick(m.assign(test_env=t), ["trial_seed", "dataset", "algorithm", "test_env"],
                   val, np.arange(len(m)))
        return _result(m, pos, t, val, test)

    @classmethod
    def select_single_source(cls, ckpts):
        m = ckpts.meta[ckpts.meta["task"] == SINGLE_SOURCE]
        rows = m.index.to_numpy()
        s = m["source"].to_numpy()
        val = ckpts.acc_out[rows, s] if len(m) else np.zeros(0)
        pos = pick(m, ["trial_seed", "dataset", "algorithm", "source"], val, np.arange(len(m)))
        return _single_source_result(m, pos, val)

    @classmethod
    def _step_acc(cls, record):
        t = record["args"]["test_envs"][0]
        val_keys = [f"env{i}_out_acc" for i in range(env_count(record)) if i != t]
        return {"val_acc": np.mean([record[k] for k in val_keys]),
                "test_acc": record[f"env{t}_in_acc"]}

    @classmethod
    def run_acc(cls, run_records):
        test_records = _single_test(run_records)
        if not len(test_records):
            return None
        return test_records.map(cls._step_acc).argmax("val_acc")


class LeaveOneOutSelectionMethod(SelectionMethod):
    """Leave-one-domain-out: validate on domain v with the run trained without t and v."""
    name = "leave-one-domain-out cross-validation"
    key = "leave_one_out"

    @classmethod
    def select(cls, ckpts):
        m = _dg(ckpts)
        keys = ["trial_seed", "dataset", "algorithm", "hparams_seed", "step"]
        single = m[m["n_test"] == 1]
        pairs = m[(m["n_test"] == 2) & (m["test_env0"] != m["test_env1"])]
        if len(single) == 0 or len(pairs) == 0:
            return _empty_result()
        single = single.assign(test_env=single["test_env0"])
        # exactly one single-test-domain record per (..., test_env, step)
        counts = single.groupby(keys + ["test_env"], sort=False)["run"].transform("size")
        single = single[counts.to_numpy() == 1]
        # each pair record [a, b] validates b for test domain a and a for test domain b
        prow = pairs.index.to_numpy()
        a, b = pairs["test_env0"].to_numpy(), pairs["test_env1"].to_numpy()
        half = pairs[keys]
        pv = pd.concat([half.assign(test_env=a, val_env=b, acc=ckpts.acc_in[prow, b], o=prow),
                        half.assign(test_env=b, val_env=a, acc=ckpts.acc_in[prow, a], o=prow)],
                       ignore_index=True)
        pv = pv.sort_values("o", kind="stable").drop_duplicates(
            keys + ["test_env", "val_env"], keep="last")
        srow = single.index.to_numpy()
        sk = single[keys + ["test_env"]].assign(s=np.arange(len(single)))
        joined = pv.merge(sk, on=keys + ["test_env"], how="inner")
        n_envs = single["n_envs"].to_numpy()
        width = max(int(n_envs.max()), 1)
        ok = (joined["val_env"].to_numpy() < n_envs[joined["s"].to_numpy()])
        joined = joined[ok]
        W = np.zeros((len(single), width))
        present = np.zeros((len(single), width), dtype=bool)
        W[joined["s"].to_numpy(), joined["val_env"].to_numpy()] = joined["acc"].to_numpy()
        present[joined["s"].to_numpy(), joined["val_env"].to_numpy()] = True
        t = single["test_env"].to_numpy()
        j = np.arange(width)[None, :]
        need = (j < n_envs[:, None]) & (j != t[:, None])
        complete = ~(need & ~present).any(axis=1) & (n_envs >= 2)
        # DomainBed sums the list in domain order, then divides by n_envs - 1
        val = packed_mean(W, n_envs, t)
        single, val, srow, t = single[complete], val[complete], srow[complete], t[complete]
        test = ckpts.acc_in[srow, t]
        pos = pick(single, ["trial_seed", "dataset", "algorithm", "test_env"], val,
                   single["step"].to_numpy())
        return _result(single, pos, t, val, test)

    @classmethod
    def _step_acc(cls, records):
        test_records = _single_test(records)
        if len(test_records) != 1:
            return None
        t = test_records[0]["args"]["test_envs"][0]
        n_envs = env_count(records[0])
        val_accs = [None] * n_envs
        for r in records.filter(lambda r: len(r["args"]["test_envs"]) == 2):
            v = (set(r["args"]["test_envs"]) - {t}).pop()
            if v < n_envs:
                val_accs[v] = r[f"env{v}_in_acc"]
        val_accs = val_accs[:t] + val_accs[t + 1:]
        if any(v is None for v in val_accs) or n_envs < 2:
            return None
        return {"val_acc": np.sum(val_accs) / (n_envs - 1),
                "test_acc": test_records[0][f"env{t}_in_acc"]}

    @classmethod
    def run_acc(cls, records):
        step_accs = records.group("step").map(
            lambda _, step_records: cls._step_acc(step_records)).filter_not_none()
        return step_accs.argmax("val_acc") if len(step_accs) else None


class OracleSelectionMethod(SelectionMethod):
    """Test-domain validation (oracle): last checkpoint, val = env{t}_out_acc."""
    name = "test-domain validation set (oracle)"
    key = "oracle"

    @classmethod
    def select(cls, ckpts):
        m, rows, t = _single_test_rows(ckpts)
        if len(m) == 0:
            return _empty_result()
        last = _last_checkpoints(m, ["trial_seed", "dataset", "algorithm", "test_env0",
                                     "hparams_seed"])
        m, rows, t = m.iloc[last], rows[last], t[last]
        val, test = ckpts.acc_out[rows, t], ckpts.acc_in[rows, t]
        pos = pick(m.assign(test_env=t), ["trial_seed", "dataset", "algorithm", "test_env"],
                   val, np.arange(len(m)))
        return _result(m, pos, t, val, test)

    @classmethod
    def select_single_source(cls, ckpts):
        m = ckpts.meta[ckpts.meta["task"] == SINGLE_SOURCE]
        last = _last_checkpoints(m, ["trial_seed", "dataset", "algorithm", "source",
                                     "hparams_seed"])
        m = m.iloc[last]
        rows = m.index.to_numpy()
        # val = mean held-out accuracy over the target domains (every domain but the source)
        val = packed_mean(ckpts.acc_out[rows], m["n_envs"].to_numpy(), m["source"].to_numpy()) \
            if len(m) else np.zeros(0)
        pos = pick(m, ["trial_seed", "dataset", "algorithm", "source"], val, np.arange(len(m)))
        return _single_source_result(m, pos, val)

    @classmethod
    def run_acc(cls, run_records):
        run_records = _single_test(run_records)
        if not len(run_records):
            return None
        t = run_records[0]["args"]["test_envs"][0]
        chosen = run_records.sorted(lambda r: r["step"])[-1]
        return {"val_acc": chosen[f"env{t}_out_acc"], "test_acc": chosen[f"env{t}_in_acc"]}


def _last_checkpoints(m: pd.DataFrame, cols: List[str]) -> np.ndarray:
    """Positions of the last checkpoint (largest step, then latest record) per group."""
    if len(m) == 0:
        return np.zeros(0, dtype=np.int64)
    g = _group_ids(m, cols)
    step = m["step"].to_numpy()
    idx = np.lexsort((-np.arange(len(m)), -step, g))
    return idx[_first_per([g[idx]])]


def _single_source_result(m, pos, val) -> pd.DataFrame:
    out = m.iloc[pos][["trial_seed", "dataset", "algorithm", "source", "hparams_seed", "step",
                       "n_envs"]].reset_index(drop=True)
    out["row"] = m.index.to_numpy()[pos]
    out["val_acc"] = val[pos]
    return out.sort_values(["dataset", "algorithm", "source", "trial_seed"],
                           kind="stable").reset_index(drop=True)


SELECTION_METHODS = (IIDAccuracySelectionMethod, LeaveOneOutSelectionMethod,
                     OracleSelectionMethod)

_ALIASES = {
    "training_domain": IIDAccuracySelectionMethod, "iid": IIDAccuracySelectionMethod,
    "training-domain": IIDAccuracySelectionMethod,
    "leave_one_out": LeaveOneOutSelectionMethod, "loo": LeaveOneOutSelectionMethod,
    "leave-one-domain-out": LeaveOneOutSelectionMethod,
    "oracle": OracleSelectionMethod, "test_domain": OracleSelectionMethod,
}


def get_selection_methods(names: Optional[Sequence[str]]) -> List[type]:
    """Resolve CLI names (comma or space separated) to methods, kept in DomainBed's order."""
    if not names:
        return list(SELECTION_METHODS)
    wanted = set()
    for name in itertools.chain.from_iterable(n.split(",") for n in names):
        name = name.strip()
        if not name:
            continue
        method = _ALIASES.get(name.lower())
        if method is None:
            raise ConfigError(f"unknown selection method {name!r}; known: training_domain "
                              "(iid), leave_one_out (loo), oracle")
        wanted.add(method)
    return [m for m in SELECTION_METHODS if m in wanted]
