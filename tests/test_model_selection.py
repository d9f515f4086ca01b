"""Model selection: the vectorised path and the Q path agree with a plain reference written from
compat section 7, on random records with many ties (accuracies are k/8)."""
import itertools
import random

import numpy as np
import pytest

from domainbed_align import model_selection as ms
from domainbed_align.lib.errors import ConfigError
from domainbed_align.lib.query import Q

DATASETS = {"VLCS": 4, "Debug28": 3}


# ---------------------------------------------------------------- reference (compat section 7)

def _groups(records):
    out = {}
    for r in records:
        a = r["args"]
        for t in a["test_envs"]:
            out.setdefault((a["trial_seed"], a["dataset"], a["algorithm"], t), []).append(r)
    return out


def _n_envs(r):
    n = 0
    while f"env{n}_out_acc" in r:
        n += 1
    return n


def _ref_run_choice(method, recs, t):
    """(val, test, step) of the chosen checkpoint of one hparams setting, or None."""
    singles = [r for r in recs if r["args"]["test_envs"] == [t]]
    if method == "iid":
        best = None
        for r in singles:                              # first best in record order
            vals = [r[f"env{j}_out_acc"] for j in range(_n_envs(r)) if j != t]
            val = sum(vals) / len(vals)
            if best is None or val > best[0]:
                best = (val, r[f"env{t}_in_acc"], r["step"])
        return best
    if method == "oracle":
        last = None
        for r in singles:                              # largest step, the later record on ties
            if last is None or r["step"] >= last["step"]:
                last = r
        return None if last is None else (last[f"env{t}_out_acc"], last[f"env{t}_in_acc"],
                                          last["step"])
    best = None                                        # leave-one-domain-out
    for step in sorted({r["step"] for r in recs}):
        at = [r for r in recs if r["step"] == step]
        test = [r for r in at if len(r["args"]["test_envs"]) == 1]
        if len(test) != 1:
            continue
        n = _n_envs(at[0])
        val_of = {}
        for r in at:
            te = r["args"]["test_envs"]
            if len(te) == 2 and t in te and te[0] != te[1]:
                v = te[0] if te[1] == t else te[1]
                val_of[v] = r[f"env{v}_in_acc"]          # the last record wins
        if any(v not in val_of for v in range(n) if v != t):
            continue
        val = sum(val_of[v] for v in range(n) if v != t) / (n - 1)
        if best is None or val > best[0]:
            best = (val, test[0][f"env{t}_in_acc"], step)
    return best


def reference_select(records, method):
    """{(trial, dataset, algorithm, test_env): (hparams_seed, step, test_acc)}."""
    out = {}
    for key, recs in _groups(records).items():
        best = None
        for h in sorted({r["args"]["hparams_seed"] for r in recs}):
            c = _ref_run_choice(method, [r for r in recs if r["args"]["hparams_seed"] == h],
                                key[3])
            if c is not None and (best is None or c[0] >= best[0]):   # ties: the later hparams
                best = (c[0], h, c[2], c[1])
        if best is not None:
            out[key] = (best[1], best[2], best[3])
    return out


# ---------------------------------------------------------------- random records

def random_records(seed, n_trials=2, n_hparams=3):
    rng = random.Random(seed)
    recs = []
    for trial, (ds, n), alg, h in itertools.product(range(n_trials), DATASETS.items(),
                                                    ["ERM", "ALIGN"], range(n_hparams)):
        envs = [[i] for i in range(n)] + [[i, j] for i in range(n) for j in range(i + 1, n)]
        for te in envs:
            if len(te) == 2 and rng.random() < 0.15:
                continue                                   # a missing pair run
            steps = [s for s in (0, 5, 10, 15) if rng.random() < 0.9] or [0]
            for s in steps:
                r = {"step": s, "args": {"algorithm": alg, "dataset": ds, "test_envs": te,
                                         "trial_seed": trial, "hparams_seed": h}}
                for i in range(n):
                    r[f"env{i}_in_acc"] = rng.randint(0, 8) / 8
                    r[f"env{i}_out_acc"] = rng.randint(0, 8) / 8
                recs.append(r)
                if rng.random() < 0.03:                    # a duplicate checkpoint
                    recs.append(dict(r, **{"env0_in_acc": rng.randint(0, 8) / 8}))
    rng.shuffle(recs)
    return recs


METHODS = {"iid": ms.IIDAccuracySelectionMethod, "loo": ms.LeaveOneOutSelectionMethod,
           "oracle": ms.OracleSelectionMethod}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name", list(METHODS))
def test_vectorised_matches_reference(seed, name):
    recs = random_records(seed)
    expected = reference_select(recs, name)
    sel = METHODS[name].select(ms.Checkpoints.from_records(recs))
    got = {(r.trial_seed, r.dataset, r.algorithm, r.test_env): (r.hparams_seed, r.step,
                                                                r.test_acc)
           for r in sel.itertuples()}
    assert len(expected) > 10
    assert got == expected


@pytest.mark.parametrize("name", list(METHODS))
def test_q_path_matches_reference(name):
    recs = random_records(11)
    expected = reference_select(recs, name)
    got = {}
    for key, group in _groups(recs).items():
        acc = METHODS[name].sweep_acc(Q(group))
        if acc is not None:
            got[key] = acc
    assert got == {k: v[2] for k, v in expected.items()}


def test_selected_row_is_the_single_test_domain_record():
    recs = random_records(3)
    ck = ms.Checkpoints.from_records(recs)
    for method in METHODS.values():
        sel = method.select(ck)
        meta = ck.meta.loc[sel["row"].to_numpy()]
        assert (meta["n_test"].to_numpy() == 1).all()
        assert (meta["test_env0"].to_numpy() == sel["test_env"].to_numpy()).all()
        assert np.array_equal(ck.acc_in[sel["row"].to_numpy(), sel["test_env"].to_numpy()],
                              sel["test_acc"].to_numpy())


def test_packed_mean_is_bit_identical_to_np_mean():
    rng = np.random.default_rng(0)
    values = rng.random((500, 6))
    n_envs = rng.integers(2, 7, 500)
    skip = np.array([rng.integers(0, n) for n in n_envs])
    got = ms.packed_mean(values, n_envs, skip)
    want = [np.mean([values[r, j] for j in range(n_envs[r]) if j != skip[r]])
            for r in range(500)]
    assert np.array_equal(got, np.array(want))


def test_single_source_selection():
    recs = []
    for h, s, step in itertools.product(range(2), range(3), (0, 1)):
        r = {"step": step, "args": {"algorithm": "ERM", "dataset": "Debug28", "trial_seed": 0,
                                    "hparams_seed": h, "task": "single_source",
                                    "test_envs": [i for i in range(3) if i != s]}}
        for i in range(3):
            r[f"env{i}_in_acc"] = 0.1 * (i + 1)
            r[f"env{i}_out_acc"] = 0.5 + 0.1 * h + 0.01 * step if i == s else 0.3
        recs.append(r)
    ck = ms.Checkpoints.from_records(recs)
    sel = ms.IIDAccuracySelectionMethod.select_single_source(ck)
    assert sel["source"].tolist() == [0, 1, 2]
    assert sel["hparams_seed"].tolist() == [1, 1, 1] and sel["step"].tolist() == [1, 1, 1]
    assert ms.LeaveOneOutSelectionMethod.select_single_source(ck) is None
    # single-source runs never enter the DomainBed tables
    assert len(ms.IIDAccuracySelectionMethod.select(ck)) == 0


def test_selection_names():
    assert ms.get_selection_methods(None) == list(ms.SELECTION_METHODS)
    assert ms.get_selection_methods(["oracle,iid"]) == [ms.IIDAccuracySelectionMethod,
                                                       ms.OracleSelectionMethod]
    with pytest.raises(ConfigError, match="unknown selection method 'best'"):
        ms.get_selection_methods(["best"])
    with pytest.raises(TypeError):
        ms.OracleSelectionMethod()
