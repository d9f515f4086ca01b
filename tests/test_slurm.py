"""End to end against a real SLURM controller (scripts/slurm_local_cluster.sh starts one here).

Marked `slurm`: skipped where the scheduler commands are absent, unless REQUIRE_SLURM=1 (CI
sets it): then absence fails (tests/conftest.py).
"""
import json
import os
import subprocess
import time

import pytest

from conftest import without_timing
from domainbed_align import launchers, sweep

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

WAIT_S = 900


def _flags(out, *extra):
    return ["--datasets", "Debug28", "--n_hparams", "1", "--n_trials", "1", "--single_test_envs",
            "--output_dir", str(out), *extra]


def _launch(out, *extra):
    rc = sweep.main(["launch", *_flags(out, *extra), "--command_launcher", "slurm",
                     "--gpus_per_job", "0", "--cpus_per_job", "1", "--mem_gb", "2",
                     "--timeout_min", "30", "--skip_confirmation"])
    assert rc == 0


def _jobs(out, *extra):
    argv = ["status", *_flags(out, *extra)]
    command, cfg, source = sweep.resolve(argv)
    jobs = [sweep.Job(a, cfg["output_dir"]) for a in sweep.make_args_list(cfg)]
    sweep.update_states(jobs, cfg["output_dir"])
    return jobs


def _wait(out, *extra, until=None):
    until = until or (lambda jobs: all(j.state not in (sweep.RUNNING, sweep.PENDING) for j in jobs))
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        jobs = _jobs(out, *extra)
        if until(jobs):
            return jobs
        time.sleep(1)
    raise AssertionError("SLURM jobs did not finish in time: " + ", ".join(str(j) for j in jobs))


def _records(folder):
    with open(os.path.join(folder, "results.jsonl")) as f:
        return without_timing([json.loads(line) for line in f])


def _slurm_ids(jobs):
    return [open(os.path.join(j.output_dir, launchers.SLURM_ID_FILE)).read().strip() for j in jobs]


@pytest.fixture
def cancel_after():
    arrays = set()
    yield arrays
    for a in arrays:
        subprocess.run(["scancel", a], capture_output=True)


def test_small_sweep_runs_as_one_job_array(tmp_path, cancel_after):
    out = tmp_path / "sw eep"   # a space: submitit quotes it
    extra = ["--algorithms", "ERM", "DRE", "--steps", "5", "--hparams", '{"explain_n": 4}']
    _launch(out, *extra)
    ids = _slurm_ids(_jobs(out, *extra))
    cancel_after.update(i.split("_")[0] for i in ids)
    jobs = _wait(out, *extra)
    assert [j.state for j in jobs] == [sweep.DONE] * 6, [str(j) for j in jobs]
    assert len({i.split("_")[0] for i in ids}) == 1 and len(set(ids)) == 6  # one array
    for j in jobs:
        assert [r["step"] for r in _records(j.output_dir)] == [0, 2, 4]
    assert os.path.isdir(out / launchers.SUBMITIT_DIR)


def _kill_wait_s():
    """The cluster's KillWait: how long a job keeps running between SIGTERM and SIGKILL."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.split("=")[0].strip() == "KillWait":
            return float(line.split("=")[1].split()[0])
    return 30.0  # SLURM's default


def _steps_outlasting(seconds, tmp_path, hparams):
    """Steps of ERM on Debug28 that still have `seconds` of training left after step 400.

    `scontrol requeue` sends SIGTERM, which submitit's job ignores, and SIGKILL KillWait seconds
    later: a job whose remaining steps take less than that finishes before it is killed, writes
    `done`, and its requeued copy has nothing to resume (a fast CI machine did exactly that with
    a fixed 2,000 steps). So the step count is measured on this machine, never guessed: a short
    run in this process gives the seconds per step, and the job gets three KillWaits of work
    past its second record (at least 2,000 steps, at most 20,000).
    """
    args = dict(dataset="Debug28", algorithm="ERM", test_envs=[0], hparams=hparams, steps=401,
                checkpoint_freq=200, output_dir=str(tmp_path / "calibration"), seed=0,
                trial_seed=0, hparams_seed=0, skip_model_save=True)
    launchers.TrainJob(args)()
    with open(os.path.join(args["output_dir"], "results.jsonl")) as f:
        step_time = max(json.loads(line)["step_time"] for line in f)
    steps = 400 + 3 * seconds / step_time
    return int(min(max(2000, -(-steps // 200) * 200), 20000))


@pytest.mark.parametrize("how", ["scontrol_requeue", "submitit_usr2"])
def test_preempted_job_resumes_to_the_records_of_an_unbroken_run(tmp_path, cancel_after, how):
    out = tmp_path / "sw"
    # one job (--test_envs 0): the other two would only repeat it and share the 2 CPUs
    # batch 8 (not Debug28's 64): a step costs ~0.02 s of CPU, not ~0.17, so the two
    # pre-emptions and their reference runs take a minute or two, not a quarter of an hour
    hparams = '{"explain_n": 4, "batch_size": 8}'
    # long enough that the pre-emption lands mid-run however fast this machine is: USR2 is
    # handled at once, a requeue kills only KillWait seconds after its SIGTERM
    steps = _steps_outlasting(_kill_wait_s() if how == "scontrol_requeue" else 1.0, tmp_path,
                              hparams)
    extra = ["--algorithms", "ERM", "--steps", str(steps), "--checkpoint_freq", "200",
             "--hparams", hparams, "--test_envs", "0"]
    _launch(out, *extra)
    jobs = _jobs(out, *extra)
    ids = _slurm_ids(jobs)
    cancel_after.update(i.split("_")[0] for i in ids)
    assert len(jobs) == 1
    job, slurm_id = jobs[0], ids[0]
    deadline = time.time() + WAIT_S
    path = os.path.join(job.output_dir, "results.jsonl")
    while time.time() < deadline:  # pre-empt once it has checkpointed a few records
        if os.path.exists(path) and len(open(path).read().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert not os.path.exists(os.path.join(job.output_dir, "done")), "finished before pre-emption"
    if how == "scontrol_requeue":
        subprocess.run(["scontrol", "requeue", slurm_id], check=True)
    else:  # what submitit's job._interrupt() sends: the job checkpoints and requeues itself
        subprocess.run(["scancel", "--signal", "USR2", slurm_id], check=True)
    jobs = _wait(out, *extra, until=lambda js: all(j.state == sweep.DONE for j in js)
                 or any(j.state == sweep.FAILED for j in js))
    assert all(j.state == sweep.DONE for j in jobs), [str(j) for j in jobs]
    with open(os.path.join(job.output_dir, "out.txt")) as f:
        assert "resuming at step" in f.read(), f"{steps} steps finished before the pre-emption"
    # the same job, unbroken, in this process
    ref = dict(job.train_args, output_dir=str(tmp_path / "ref"))
    launchers.TrainJob(ref)()
    assert _records(job.output_dir) == _records(ref["output_dir"])
    assert [r["step"] for r in _records(job.output_dir)] == list(range(0, steps, 200)) + [steps - 1]


def test_failed_job_shows_failed_and_only_it_is_resubmitted(tmp_path, cancel_after, capsys):
    out = tmp_path / "sw"
    extra = ["--algorithms", "ERM", "--steps", "3", "--hparams", '{"explain_n": 4}']
    jobs = _jobs(out, *extra)
    bad = jobs[1]
    os.makedirs(bad.output_dir)
    with open(os.path.join(bad.output_dir, "checkpoint.pt"), "wb") as f:
        f.write(b"not a checkpoint")  # the trainer refuses it: the job raises
    with open(os.path.join(bad.output_dir, launchers.ERROR_FILE), "w") as f:
        f.write("error: an earlier failure\n")  # Failed: launch submits it (an Incomplete job it would not)
    _launch(out, *extra)
    first_ids = _slurm_ids(_jobs(out, *extra))
    cancel_after.update(i.split("_")[0] for i in first_ids)
    jobs = _wait(out, *extra)
    assert [j.state for j in jobs] == [sweep.DONE, sweep.FAILED, sweep.DONE], [str(j) for j in jobs]
    assert "checkpoint.pt" in jobs[1].detail and "delete it" in jobs[1].detail
    capsys.readouterr()
    assert sweep.main(["status", *_flags(out, *extra), "--failed"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[-1] == "3 jobs: 2 done, 0 incomplete, 0 not launched, 0 running, 0 pending, 1 failed."
    assert "cannot read" in text
    os.remove(os.path.join(bad.output_dir, "checkpoint.pt"))
    _launch(out, *extra)
    second_ids = _slurm_ids(_jobs(out, *extra))
    cancel_after.update(i.split("_")[0] for i in second_ids)
    assert second_ids[0] == first_ids[0] and second_ids[2] == first_ids[2]
    assert second_ids[1].split("_")[0] != first_ids[1].split("_")[0]
    assert "_" not in second_ids[1]  # one job: submitit submits it as a plain job
    jobs = _wait(out, *extra)
    assert [j.state for j in jobs] == [sweep.DONE] * 3
