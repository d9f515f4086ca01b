"""Launchers: local (in-process and worker processes) on Debug28, and the SLURM launcher against a
fake sbatch (one call per launch, the script snapshotted). The real cluster: test_slurm.py."""
import json
import os
import re
import sys

import pytest

from domainbed_align import launchers, sweep

GOLDEN_SBATCH = os.path.join(os.path.dirname(__file__), "data", "sbatch_array.golden.sh")


def _argv(out, *extra):
    return ["launch", "--datasets", "Debug28", "--algorithms", "ERM", "--n_hparams", "1", "--n_trials", "1",
            "--single_test_envs", "--steps", "3", "--hparams", '{"explain_n": 4}', "--output_dir", str(out),
            "--skip_confirmation", *extra]


def test_local_launcher_runs_jobs_and_records_a_failure(weird_tmp_path, capsys):
    out = weird_tmp_path / "sw"
    assert sweep.main(_argv(out)) == 0
    assert sorted(os.listdir(out)) == sorted(os.path.basename(j) for j in _dirs(out))
    for d in _dirs(out):
        assert os.path.exists(os.path.join(d, "done")) and not os.path.exists(os.path.join(d, "running"))
    # a job whose trainer stops with a user error: Failed with its line; the others still run
    bad = ["--algorithms", "ERM", "DRE", "--hparams", '{"explain_n": 4, "lr": 1e30}', "--n_hparams", "1"]
    capsys.readouterr()
    assert sweep.main(_argv(out) + bad) == 0
    err = capsys.readouterr().err
    assert "6 of 6 job(s) failed" in err or "job(s) failed" in err
    assert sweep.main(["status", *_argv(out)[1:-1], *bad, "--failed"]) == 0
    text = capsys.readouterr().out
    assert "6 jobs: 0 done, 0 incomplete, 0 not launched, 0 running, 0 pending, 6 failed." in text
    assert re.search(r"    error: (\w+ is (nan|inf) at step 0|the model outputs NaN/inf)", text), text


def _dirs(out):
    return [os.path.join(out, n) for n in os.listdir(out) if not n.startswith("_")]


@pytest.mark.slow
def test_local_workers_run_in_processes(tmp_path, capsys):
    out = tmp_path / "sw"
    assert sweep.main(_argv(out, "--local_workers", "2")) == 0
    capsys.readouterr()
    assert sweep.main(["status", *_argv(out)[1:]]) == 0
    assert "3 jobs: 3 done," in capsys.readouterr().out


@pytest.mark.slow
def test_pool_launcher_reuses_workers_and_records_a_failure(tmp_path, capsys):
    out = tmp_path / "sw"
    argv = _argv(out, "--command_launcher", "pool", "--local_workers", "1",
                 "--hparams_grid", '[{"lr": 0.001}, {"lr": 1e30}]')
    assert sweep.main(argv) == 0
    text = capsys.readouterr()
    assert "3 of 6 job(s) failed" in text.err
    assert text.out.count(" failed: ") == 3
    done = [d for d in _dirs(out) if os.path.exists(os.path.join(d, "done"))]
    assert len(done) == 3
    for d in _dirs(out):
        assert not os.path.exists(os.path.join(d, "running"))
    lrs = {json.loads(open(os.path.join(d, "results.jsonl")).readline())["hparams"]["lr"] for d in done}
    assert lrs == {0.001}
    assert sweep.main(["status", *[a for a in argv[1:] if a != "--skip_confirmation"], "--failed"]) == 0
    assert "6 jobs: 3 done, 0 incomplete, 0 not launched, 0 running, 0 pending, 3 failed." in \
        capsys.readouterr().out


def test_slurm_launcher_makes_one_sbatch_call(weird_tmp_path, capsys, monkeypatch):
    """A fake sbatch records its script; every job goes into one array, ids land in the folders."""
    bin_dir = weird_tmp_path.parent / "bin"
    bin_dir.mkdir()
    calls = weird_tmp_path.parent / "calls"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncat "$1" >> "{calls}"\necho "Submitted batch job 4242"\n')
    # submitit picks SLURM only where `srun` is on PATH; scontrol (MaxArraySize) answers nothing
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    for name in ("sbatch", "srun", "scontrol"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    out = weird_tmp_path / "sw"
    argv = _argv(out, "--command_launcher", "slurm", "--gpus_per_job", "0", "--cpus_per_job", "2",
                 "--slurm_partition", "gpu", "--timeout_min", "60", "--mem_gb", "16",
                 "--slurm_setup", "module load cuda", "--slurm_additional_parameters", '{"exclude": "n3"}')
    assert sweep.main(argv) == 0
    script = calls.read_text()
    assert script.count("#SBATCH --array=0-2%3") == 1  # one sbatch call, one array of three
    ids = sorted(open(os.path.join(d, "slurm_job_id")).read().strip() for d in _dirs(out))
    assert ids == ["4242_0", "4242_1", "4242_2"]
    # paths are shell-quoted ('"'"' for each quote of the weird folder name): cut them at the sweep
    normalised = re.sub(r"'[^'\n]*'\"'\"'[^\n]*?/sw/_submitit", "'SWEEP/_submitit", script)
    normalised = normalised.replace(sys.executable, "PYTHON").replace(sweep.REPO, "REPO")
    if os.environ.get("UPDATE_GOLDEN"):
        with open(GOLDEN_SBATCH, "w") as f:
            f.write(normalised)
    expected = open(GOLDEN_SBATCH).read()
    assert normalised == expected, (
        "the sbatch script changed; if on purpose, accept it with\n"
        f"  UPDATE_GOLDEN=1 python -m pytest {__file__} -k sbatch\n" + normalised)


def test_slurm_job_callable_is_checkpointable():
    job = launchers.TrainJob({"dataset": "Debug28", "output_dir": "/x"})
    resubmission = job.checkpoint()
    assert isinstance(resubmission.function, launchers.TrainJob)
    assert resubmission.function.train_args == job.train_args
    assert resubmission.function is not job  # a fresh callable: the state is the trainer's checkpoint


def test_multi_gpu_gives_each_gpu_its_own_worker(monkeypatch):
    """One slot per visible GPU; each job a fresh process with an argv list and its GPU."""
    import threading
    seen, lock = [], threading.Lock()

    class Done:
        returncode = 0

    def fake_run(argv, env, **kwargs):
        with lock:
            seen.append((argv, env["CUDA_VISIBLE_DEVICES"], threading.get_ident()))
        return Done()

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setattr(launchers.subprocess, "run", fake_run)
    jobs = [launchers.TrainJob({"dataset": "Debug28", "test_envs": [i], "output_dir": f"/x/{i}",
                                "hparams": '{"lr": 0.1}'}) for i in range(5)]
    launchers.multi_gpu_launcher(jobs, launchers.LaunchOptions())
    assert sorted(json.loads(a[-1])["output_dir"] for a, _, _ in seen) == [f"/x/{i}" for i in range(5)]
    assert all(a[:4] == [sys.executable, "-m", "domainbed_align.launchers", "run-job"] for a, _, _ in seen)
    gpu_of_thread = {t: g for _, g, t in seen}
    assert set(g for _, g, _ in seen) <= {"3", "5"} and len(gpu_of_thread) <= 2
    assert all(gpu_of_thread[t] == g for _, g, t in seen)  # a worker keeps its GPU
