"""`train --tensorboard`: event files in the run folder, each step exactly once after a kill
and a resume, nothing when off, one error line without the package, `sweep --tensorboard`
passed to jobs only when set (job folders of other sweeps unchanged)."""
import glob
import os
import subprocess
import sys

import pytest

from conftest import REPO, kill_after_records
from domainbed_align.lib import tb_events

pytest.importorskip("tensorboard")


def read_events(run_dir):
    """tag -> [(step, value)] in file order, over every event file of the folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def raw_steps(run_dir, tag):
    """Steps of `tag` read straight from the files (no purge logic of TensorBoard's)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    steps = []
    for path in sorted(glob.glob(os.path.join(run_dir, tb_events.EVENTS_GLOB))):
        for event in EventFileLoader(path).Load():
            steps += [event.step for v in event.summary.value if v.tag == tag]
    return sorted(steps)


def test_resume_drops_what_the_killed_process_wrote_after_its_checkpoint(tmp_path):
    log = tb_events.EventLog(str(tmp_path))
    for step in range(10):
        log.update(step, {"loss": float(step), "nan": float("nan")})
    log.record({"step": 5, "env0_in_acc": 0.5, "args": {"x": 1}, "hparams": {}, "flag": True})
    log.flush()                       # killed here: no close; the checkpoint said next step 6
    resumed = tb_events.EventLog(str(tmp_path), first_step=6)
    for step in range(6, 10):
        resumed.update(step, {"loss": 100.0 + step})
    resumed.close()
    events = read_events(tmp_path)
    assert sorted(events) == ["records/env0_in_acc", "update/loss"]      # NaN, dicts, bools out
    assert events["update/loss"] == [(s, float(s)) for s in range(6)] + \
        [(s, 100.0 + s) for s in range(6, 10)]
    assert raw_steps(tmp_path, "update/loss") == list(range(10))
    assert events["records/env0_in_acc"] == [(5, 0.5)]
    assert tb_events.prune(str(tmp_path), 100) == 0                   # nothing to drop


def test_without_the_package_one_error_line(monkeypatch, tmp_path):
    import builtins
    real = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name.startswith("tensorboard"):
            raise ImportError("no tensorboard")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(tb_events.ConfigError, match=r'pip install -e "\.\[tensorboard\]"'):
        tb_events.open_event_log(str(tmp_path), 0, True)
    assert isinstance(tb_events.open_event_log(str(tmp_path), 0, False), tb_events.NoEventLog)


def test_flag_is_not_part_of_the_run_args():
    from domainbed_align import train
    on = train.parse_args(["--tensorboard"])
    assert on.tensorboard and "tensorboard" not in on.record_args()
    assert train.parse_args([]).record_args() == on.record_args()


def test_sweep_passes_the_flag_only_when_set():
    from domainbed_align import sweep
    base = ["launch", "--datasets", "Debug28", "--algorithms", "ERM", "--n_hparams", "1",
            "--n_trials", "1", "--single_test_envs"]
    _, cfg, _ = sweep.resolve(base)
    _, cfg_tb, _ = sweep.resolve(base + ["--tensorboard"])
    plain, with_tb = sweep.make_args_list(cfg), sweep.make_args_list(cfg_tb)
    assert all("tensorboard" not in a for a in plain)
    assert all(a.pop("tensorboard") is True for a in with_tb) and with_tb == plain
    job = sweep.Job(dict(sweep.make_args_list(cfg_tb)[0]), "/s")
    assert "--tensorboard" in job.train_job().argv()


def _train(out, steps=20, freq=5):
    return [sys.executable, "-m", "domainbed_align.train", "--dataset", "Debug28", "--algorithm",
            "ERM", "--test_envs", "0", "--steps", str(steps), "--checkpoint_freq", str(freq),
            "--output_dir", str(out), "--skip_model_save", "--tensorboard",
            "--hparams", '{"explain_n": 0, "batch_size": 8}']


@pytest.mark.slow
def test_killed_and_resumed_run_has_each_step_once(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_train(out), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    kill_after_records(proc, out / "results.jsonl", 2, max_delay_s=0.3)   # mid-interval
    assert not (out / "done").exists(), "the run finished before the kill; make it longer"
    subprocess.run(_train(out), check=True, cwd=REPO, capture_output=True)
    assert raw_steps(out, "update/loss") == list(range(20))
    record_steps = [0, 5, 10, 15, 19]
    assert raw_steps(out, "records/env1_out_acc") == record_steps
    events = read_events(out)
    assert [s for s, _ in events["records/env0_in_acc"]] == record_steps
    assert len(glob.glob(str(out / tb_events.EVENTS_GLOB))) == 2      # one file per process


def test_checkpoint_flushes_the_events_first(tmp_path, monkeypatch):
    """Steps before a checkpoint's next step must be on disk when the checkpoint is."""
    from domainbed_align import train
    order = []
    t = train.Trainer(train.parse_args(["--output_dir", str(tmp_path)]))
    t.events = type("Log", (), {"flush": lambda self: order.append("flush")})()
    class Saved(Exception):
        pass

    def atomic_open(*args, **kwargs):
        order.append("save")
        raise Saved
    monkeypatch.setattr(train, "atomic_open", atomic_open)
    t.algorithm = type("A", (), {"state_dict": lambda self: {}, "optimizers": lambda self: {}})()
    with pytest.raises(Saved):
        t._save_checkpoint(1, {}, [])
    assert order == ["flush", "save"]
