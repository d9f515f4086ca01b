"""Model selection on small hand-checked sweeps: edge sizes (no, one record), the last of
duplicate records, values returned, and the exact layout of the result frames."""
import numpy as np
import pytest

from domainbed_align import model_selection as ms
from domainbed_align.lib.errors import ConfigError
from domainbed_align.lib.query import Q

METHODS = (ms.IIDAccuracySelectionMethod, ms.LeaveOneOutSelectionMethod,
           ms.OracleSelectionMethod)


def rec(test_envs, step, in_acc, out_acc, h=0, task=None, trial=0):
    r = {"step": step, "args": {"algorithm": "ERM", "dataset": "D", "test_envs": test_envs,
                                "trial_seed": trial, "hparams_seed": h}}
    if task:
        r["args"]["task"] = task
    for i, (a, b) in enumerate(zip(in_acc, out_acc)):
        r[f"env{i}_in_acc"], r[f"env{i}_out_acc"] = a, b
    return r


def test_empty_sweep_gives_empty_frames_with_the_result_columns():
    ck = ms.Checkpoints.from_records([])
    assert len(ck) == 0
    for m in METHODS:
        out = m.select(ck)
        assert len(out) == 0 and list(out.columns) == ms.RESULT_COLUMNS
    dg_only = ms.Checkpoints.from_records([rec([0], 0, [0.5, 0.5], [0.5, 0.5])])
    for m in (ms.IIDAccuracySelectionMethod, ms.OracleSelectionMethod):
        out = m.select_single_source(dg_only)
        assert len(out) == 0
        assert list(out.columns) == ["trial_seed", "dataset", "algorithm", "source",
                                     "hparams_seed", "step", "n_envs", "row", "val_acc"]


def test_one_record_is_selected_by_iid_and_oracle():
    ck = ms.Checkpoints.from_records([rec([1], 4, [0.1, 0.2, 0.3], [0.4, 0.5, 0.75])])
    for m, val in ((ms.IIDAccuracySelectionMethod, (0.4 + 0.75) / 2),
                   (ms.OracleSelectionMethod, 0.5)):
        out = m.select(ck)
        assert list(out.columns) == ms.RESULT_COLUMNS
        assert out.to_dict("records") == [{"trial_seed": 0, "dataset": "D", "algorithm": "ERM",
                                           "test_env": 1, "hparams_seed": 0, "step": 4,
                                           "row": 0, "val_acc": val, "test_acc": 0.2}]
        assert list(out.index) == [0]
    assert ms.OracleSelectionMethod.run_acc(Q([rec([1], 4, [0.1, 0.2], [0.4, 0.5])])) == \
        {"val_acc": 0.5, "test_acc": 0.2}


def test_single_source_with_one_record_and_its_frame():
    r = rec([1, 2], 3, [0.1, 0.2, 0.3], [0.4, 0.5, 0.75], task="single_source")
    ck = ms.Checkpoints.from_records([rec([0], 0, [0.9] * 3, [0.9] * 3), r])
    for m, val in ((ms.IIDAccuracySelectionMethod, 0.4), (ms.OracleSelectionMethod, 0.625)):
        out = m.select_single_source(ck)
        assert out.to_dict("records") == [{"trial_seed": 0, "dataset": "D", "algorithm": "ERM",
                                           "source": 0, "hparams_seed": 0, "step": 3,
                                           "n_envs": 3, "row": 1, "val_acc": val}]


def _loo_two_domains(pair_in):
    return [rec([0], 0, [0.25, 0.5], [0.0, 0.0]), rec([0, 1], 0, [0.0, pair_in], [0.0, 0.0])]


def test_leave_one_out_with_two_domains_and_one_pair():
    out = ms.LeaveOneOutSelectionMethod.select(ms.Checkpoints.from_records(_loo_two_domains(0.75)))
    assert out[["test_env", "step", "row", "val_acc", "test_acc"]].to_dict("records") == \
        [{"test_env": 0, "step": 0, "row": 0, "val_acc": 0.75, "test_acc": 0.25}]
    assert list(out.columns) == ms.RESULT_COLUMNS
    assert ms.LeaveOneOutSelectionMethod.run_acc(Q(_loo_two_domains(0.75))) == \
        {"val_acc": 0.75, "test_acc": 0.25}
    # no pair run, or no single-test run: nothing to select
    assert len(ms.LeaveOneOutSelectionMethod.select(
        ms.Checkpoints.from_records(_loo_two_domains(0.75)[:1]))) == 0
    assert len(ms.LeaveOneOutSelectionMethod.select(
        ms.Checkpoints.from_records(_loo_two_domains(0.75)[1:]))) == 0


def _loo_three_domains(dup_first, dup_last):
    """Test domain 0; at step 0 the pair run [0, 2] was written twice (a requeue)."""
    return [rec([0], 0, [0.5, 0, 0], [0, 0, 0]), rec([0], 1, [0.25, 0, 0], [0, 0, 0]),
            rec([0, 1], 0, [0, 0.5, 0], [0, 0, 0]), rec([0, 1], 1, [0, 0.5, 0], [0, 0, 0]),
            rec([0, 2], 0, [0, 0, dup_first], [0, 0, 0]),
            rec([0, 2], 1, [0, 0, 0.375], [0, 0, 0]),
            rec([0, 2], 0, [0, 0, dup_last], [0, 0, 0])]


def test_leave_one_out_last_duplicate_wins_and_value_is_the_mean():
    # step 0 validates at (0.5 + 0.125) / 2, step 1 at (0.5 + 0.375) / 2: step 1 wins
    recs = _loo_three_domains(0.875, 0.125)
    out = ms.LeaveOneOutSelectionMethod.select(ms.Checkpoints.from_records(recs))
    assert out[["step", "row", "val_acc", "test_acc"]].to_dict("records") == \
        [{"step": 1, "row": 1, "val_acc": 0.4375, "test_acc": 0.25}]
    assert ms.LeaveOneOutSelectionMethod.run_acc(Q(recs)) == {"val_acc": 0.4375,
                                                              "test_acc": 0.25}
    # the other way round: the rewritten line makes step 0 the best
    recs = _loo_three_domains(0.125, 0.875)
    out = ms.LeaveOneOutSelectionMethod.select(ms.Checkpoints.from_records(recs))
    assert out[["step", "val_acc", "test_acc"]].to_dict("records") == \
        [{"step": 0, "val_acc": 0.6875, "test_acc": 0.5}]


def test_leave_one_out_ignores_pairs_beyond_the_recorded_domains():
    recs = _loo_three_domains(0.125, 0.125) + [rec([0, 3], 1, [0, 0, 0.375], [0, 0, 0])]
    # a four-domain run elsewhere in the sweep makes the table four wide (a three-wide one:
    # test_a_test_domain_beyond_the_records_is_left_out_not_an_index_error)
    other = rec([0], 0, [0.5] * 4, [0.5] * 4)
    other["args"]["dataset"] = "E"
    out = ms.LeaveOneOutSelectionMethod.select(ms.Checkpoints.from_records(recs + [other]))
    assert out["val_acc"].tolist() == [0.4375]
    assert ms.LeaveOneOutSelectionMethod.run_acc(Q(recs))["val_acc"] == 0.4375


def test_checkpoints_from_records_meta():
    recs = [rec([0], 5, [0.5, 0.25], [0.75, 1.0]), {"step": 1, "env0_out_acc": 0.5, "args": {
        "algorithm": "A", "dataset": "D", "test_envs": [1, 0]}}]
    ck = ms.Checkpoints.from_records(recs)
    assert ck.meta["run"].tolist() == [0, 1] and ck.meta["line"].tolist() == [0, 0]
    assert ck.meta["line"].dtype == np.int64
    assert ck.meta[["n_test", "test_env0", "test_env1", "n_envs"]].values.tolist() == \
        [[1, 0, -1, 2], [2, 1, 0, 1]]
    np.testing.assert_array_equal(ck.acc_in, [[0.5, 0.25], [np.nan, np.nan]])
    np.testing.assert_array_equal(ck.acc_out, [[0.75, 1.0], [0.5, np.nan]])


def test_record_arrays_missing_in_accuracy_is_nan():
    steps, n_envs, acc_in, acc_out = ms.record_arrays([
        {"step": 2, "env0_out_acc": 0.5, "env1_out_acc": None, "env0_in_acc": None},
        {"env0_out_acc": 0.25}])
    assert steps.tolist() == [2, -1] and n_envs.tolist() == [2, 1]
    np.testing.assert_array_equal(acc_in, [[np.nan, np.nan], [np.nan, np.nan]])
    np.testing.assert_array_equal(acc_out, [[0.5, np.nan], [0.25, np.nan]])


def test_packed_mean_edge_rows():
    values = np.array([[1.0, 2.0, 4.0], [8.0, 16.0, 32.0], [5.0, 7.0, 9.0]])
    got = ms.packed_mean(values, np.array([0, 1, 3]), np.array([0, 0, 1]))
    assert np.isnan(got[0]) and np.isnan(got[1]) and got[2] == 7.0
    assert ms.packed_mean(values[2:], np.array([3]), np.array([2])).tolist() == [6.0]


def test_selection_method_names_and_errors():
    assert ms.get_selection_methods(["iid,,oracle"]) == [ms.IIDAccuracySelectionMethod,
                                                        ms.OracleSelectionMethod]
    assert ms.get_selection_methods(["LOO", " training-domain "]) == \
        [ms.IIDAccuracySelectionMethod, ms.LeaveOneOutSelectionMethod]
    with pytest.raises(ConfigError) as e:
        ms.get_selection_methods(["best"])
    assert str(e.value) == ("unknown selection method 'best'; known: training_domain (iid), "
                            "leave_one_out (loo), oracle")
    with pytest.raises(TypeError, match="^selection methods are used through their "
                                        "classmethods$"):
        ms.SelectionMethod()


def test_env_count_and_record_arrays_on_nothing():
    assert ms.env_count({}) == 0 and ms.env_count({"env1_out_acc": 0.5}) == 0
    assert ms.env_count({"env0_out_acc": 0, "env1_out_acc": 0, "env3_out_acc": 0}) == 2
    steps, n_envs, acc_in, acc_out = ms.record_arrays([])
    assert steps.shape == (0,) and n_envs.shape == (0,)
    assert acc_in.shape == (0, 0) and acc_out.shape == (0, 0)
    steps, n_envs, _, _ = ms.record_arrays([{"step": None}, {"step": 3.0}, {}])
    assert steps.tolist() == [-1, 3, -1] and n_envs.tolist() == [0, 0, 0]
    assert steps.dtype == np.int64 and n_envs.dtype == np.int64


def test_run_meta_needs_algorithm_dataset_and_test_envs():
    full = {"algorithm": "A", "dataset": "D", "test_envs": ["1"]}
    assert ms.run_meta(full) == {"algorithm": "A", "dataset": "D", "test_envs": [1],
                                 "trial_seed": 0, "hparams_seed": 0,
                                 "task": "domain_generalization"}
    for missing in ("algorithm", "dataset", "test_envs"):
        assert ms.run_meta({k: v for k, v in full.items() if k != missing}) is None
    assert ms.run_meta({**full, "test_envs": []}) is None
    assert ms.run_meta({**full, "test_envs": ["x"]}) is None
    assert ms.run_meta(None) is None and ms.run_meta([full]) is None


def test_unusable_records_are_counted_and_skipped():
    ss_two_sources = rec([0], 0, [0.5] * 3, [0.5] * 3, task="single_source")
    recs = [{"step": 0, "env0_out_acc": 0.5, "args": {}}, ss_two_sources, ss_two_sources,
            rec([1], 2, [0.1, 0.2], [0.3, 0.4]), {"step": 1, "env0_out_acc": 0.5}]
    ck = ms.Checkpoints.from_records(recs)
    assert ck.n_unusable == 4 and len(ck) == 1
    assert ck.meta[["run", "step", "source", "test_env0"]].values.tolist() == [[3, 2, -1, 1]]
    np.testing.assert_array_equal(ck.acc_in, [[0.1, 0.2, np.nan]])    # padded to the widest
    empty = ms.Checkpoints.from_records(recs[:3])
    assert empty.n_unusable == 3 and len(empty) == 0
    assert empty.acc_in.shape == (0, 3) and empty.acc_out.shape == (0, 3)
    none = ms.Checkpoints.from_parts([])
    assert none.acc_in.shape == (0, 0) and none.acc_out.shape == (0, 0) and none.n_unusable == 0
    assert list(empty.meta.columns) == ["run", "line", "trial_seed", "dataset", "algorithm",
                                        "hparams_seed", "task", "step", "n_envs", "n_test",
                                        "test_env0", "test_env1", "source"]
    for k in empty.meta.columns:
        assert empty.meta[k].dtype == (object if k in ("dataset", "algorithm", "task")
                                       else np.int64), k


def test_nan_validation_ranks_below_every_number():
    recs = [rec([0], 0, [0.25, 0, 0], [0, np.nan, 0.5]),      # val NaN (a domain missing)
            rec([0], 1, [0.5, 0, 0], [0, 0.0, 0.0])]          # val 0.0
    out = ms.IIDAccuracySelectionMethod.select(ms.Checkpoints.from_records(recs))
    assert out[["step", "test_acc"]].to_dict("records") == [{"step": 1, "test_acc": 0.5}]
    # across hparams too: the NaN setting loses to a 0.0 one whatever its seed
    recs = [rec([0], 0, [0.25, 0], [0, np.nan], h=5), rec([0], 0, [0.5, 0], [0, 0.0], h=1)]
    out = ms.IIDAccuracySelectionMethod.select(ms.Checkpoints.from_records(recs))
    assert out["hparams_seed"].tolist() == [1]


def test_a_test_domain_beyond_the_records_is_left_out_not_an_index_error():
    """Issue 22: a pair run naming domain 5 of a 3-domain dataset (or a single run naming 7)
    made leave-one-domain-out (and the other methods) raise IndexError; now such rows are
    left out of selection and the rest is selected as if they were absent."""
    good = [rec([0], 0, [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]),
            rec([0, 1], 0, [0.7, 0.8, 0.9], [0.5] * 3), rec([0, 2], 0, [0.7, 0.8, 0.9], [0.5] * 3)]
    bad = [rec([0, 5], 0, [0.5] * 3, [0.5] * 3), rec([7], 0, [0.5] * 3, [0.5] * 3),
           rec([-1], 0, [0.5] * 3, [0.5] * 3)]
    ck = ms.Checkpoints.from_records(good + bad)
    out = ms.LeaveOneOutSelectionMethod.select(ck).to_dict("records")
    assert out == [{"trial_seed": 0, "dataset": "D", "algorithm": "ERM", "test_env": 0,
                    "hparams_seed": 0, "step": 0, "row": 0, "val_acc": pytest.approx(0.85),
                    "test_acc": 0.1}]   # val: env1_in of [0, 1] and env2_in of [0, 2]
    for m in (ms.IIDAccuracySelectionMethod, ms.OracleSelectionMethod):
        assert [r["test_env"] for r in m.select(ck).to_dict("records")] == [0]
