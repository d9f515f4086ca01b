"""Faults at cluster scale (issue 22) that need no scheduler: damaged files, a full disk,
concurrent launches and collectors, queued jobs. Each test backs a row of README's fault
table. The SLURM ones (requeue soak, node failure, MaxArraySize): test_faults_slurm.py."""
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, run_module, without_timing
from domainbed_align import collect_results, launchers, sweep, train
from domainbed_align.lib import integrity

FLAGS = ["--datasets", "Debug28", "--algorithms", "ERM", "--n_hparams", "1", "--n_trials", "1",
         "--test_envs", "0", "--steps", "4", "--checkpoint_freq", "1", "--hparams",
         '{"explain_n": 4}']


def _flags(out):
    return [*FLAGS, "--output_dir", str(out)]


def _job(out) -> sweep.Job:
    jobs = _states(out)
    assert len(jobs) == 1
    return jobs[0]


def _states(out):
    _, cfg, _ = sweep.resolve(["status", *_flags(out)])
    jobs = [sweep.Job(a, cfg["output_dir"]) for a in sweep.make_args_list(cfg)]
    sweep.update_states(jobs, cfg["output_dir"])
    return jobs


def _records(folder):
    with open(os.path.join(folder, "results.jsonl")) as f:
        return without_timing([json.loads(line) for line in f])


def _main(capsys, module_main, *argv):
    capsys.readouterr()
    rc = module_main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A one-job sweep run to the end here (4 steps), and its job's train argv."""
    out = tmp_path_factory.mktemp("finished") / "sw"
    assert sweep.main(["launch", *_flags(out), "--skip_confirmation"]) == 0
    job = _job(out)
    assert job.state == sweep.DONE
    return out


@pytest.fixture
def sweep_copy(finished, tmp_path):
    """A private copy of the finished sweep (its job folder renamed along: same identity)."""
    out = tmp_path / "sw"
    shutil.copytree(finished, out)
    return out, _job(out)


def _train_argv(job, output_dir=None):
    args = dict(job.train_args, **({"output_dir": str(output_dir)} if output_dir else {}))
    return launchers.TrainJob(args).argv()


# --------------------------------------------------------------------------------------------
# Damaged files: train names them, status calls them Corrupt, the collector counts and skips
# --------------------------------------------------------------------------------------------

def _cut(path, keep):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:keep] if isinstance(keep, int) else keep)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["model_truncated", "model_garbage", "done_without_records",
                                  "records_cut_mid_line"])
def test_damaged_finished_run_is_named_by_train_status_and_collector(sweep_copy, capsys, case):
    out, job = sweep_copy
    d = job.output_dir
    model, records = os.path.join(d, "model.pkl"), os.path.join(d, "results.jsonl")
    good_lines = open(records).read().splitlines()
    if case == "model_truncated":
        _cut(model, os.path.getsize(model) // 2)
    elif case == "model_garbage":
        _cut(model, b"<html>quota exceeded</html>")
    elif case == "done_without_records":
        os.remove(records)
    else:  # a crash of the file system lost the tail of the last line
        _cut(records, os.path.getsize(records) - 40)
    want = {"model_truncated": f"model damaged: {model} is truncated or not a torch file",
            "model_garbage": f"model damaged: {model} is truncated or not a torch file",
            "done_without_records": f"done without records: {records} is missing",
            "records_cut_mid_line": f"records damaged: {records} ends mid-line (cut)"}[case]
    # train: one line, exit 2, nothing touched
    before = {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)}
    rc, _, err = _main(capsys, train.main, *_train_argv(job))
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"error: {want}"), err
    assert "delete" in err and "Traceback" not in err
    assert {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)} == before
    # status: a state of its own (not Done), its detail the same line; launch leaves it alone
    rc, text, _ = _main(capsys, sweep.main, "status", *_flags(out), "--failed")
    assert rc == 0 and text.splitlines()[0].startswith("Corrupt: ")
    assert text.splitlines()[1] == "    " + err[len("error: "):].strip()
    assert text.splitlines()[-1] == ("1 jobs: 0 done, 0 incomplete, 0 not launched, 0 running, "
                                     "0 pending, 0 failed, 1 corrupt.")
    rc, text, _ = _main(capsys, sweep.main, "launch", *_flags(out), "--skip_confirmation")
    assert "Leaving 1 corrupt job(s) alone" in text and "About to launch 0 jobs." in text
    rc, text, _ = _main(capsys, sweep.main, "delete_incomplete", *_flags(out), "--skip_confirmation")
    assert os.path.isdir(d)   # never deleted as incomplete: it may hold a finished result
    # the collector: damaged records counted and skipped, the rest used
    rc, text, err = _main(capsys, collect_results.main, "--input_dir", out, "--workers", "1",
                          "--no_cache", "--no_write")
    assert rc == 0
    n_good = len(good_lines) - (case == "records_cut_mid_line")
    if case == "done_without_records":
        assert text.splitlines()[0] == "Total records: 0"
        assert "warning: skipped 1 run(s) marked done without records" in err
    else:
        assert text.splitlines()[0] == f"Total records: {n_good}"
        assert ("warning: skipped 1 truncated or unreadable line(s)" in err) == \
            (case == "records_cut_mid_line")
    # what the line says to delete, deleted: the same command makes it whole again
    line = _states(out)[0].detail
    to_delete = [os.path.join(d, "done")] + ([model] if case.startswith("model") else [])
    assert all(f"delete {p}" in line or f"and {p}" in line or f"delete {p} " in line
               for p in to_delete), line
    for path in to_delete:
        os.remove(path)
    assert train.main(_train_argv(job)) == 0
    assert _states(out)[0].state == sweep.DONE
    assert [r["step"] for r in _records(d)] == [0, 1, 2, 3]


def _stopped_after_step_0(out):
    """The sweep's one job, run here and stopped after step 0 (checkpoint.pt: next_step 1)."""
    job = _job(out)
    argv = _train_argv(job)
    trainer = train.Trainer(train.parse_args(argv))
    trainer.request_stop()
    with pytest.raises(train.Preempted):
        trainer()
    return job, argv


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_checkpoint_is_named_and_the_run_restarts_once_it_is_deleted(tmp_path, capsys,
                                                                            damage):
    out = tmp_path / "sw"
    job, argv = _stopped_after_step_0(out)
    ckpt = os.path.join(job.output_dir, "checkpoint.pt")
    _cut(ckpt, {"truncated": os.path.getsize(ckpt) // 3, "garbage": b"\x00" * 4096,
                "empty": b""}[damage])
    # status: Corrupt (not Incomplete), the detail says what to delete
    jobs = _states(out)
    assert jobs[0].state == sweep.CORRUPT
    assert jobs[0].detail.startswith(f"checkpoint damaged: {ckpt} is ")
    assert "delete it to restart the run from step 0" in jobs[0].detail
    rc, _, err = _main(capsys, train.main, *argv)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: cannot read {ckpt} (") and "delete it to restart" in err
    os.remove(ckpt)
    assert train.main(argv) == 0
    ref = tmp_path / "ref"
    assert train.main(_train_argv(job, ref)) == 0
    assert _records(job.output_dir) == _records(ref)


def test_records_cut_in_an_unfinished_run_are_rewritten_from_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "sw"
    job, argv = _stopped_after_step_0(out)
    records = os.path.join(job.output_dir, "results.jsonl")
    _cut(records, 30)
    assert integrity.records_tail_problem(records) == "ends mid-line (cut)"
    assert _states(out)[0].state == sweep.INCOMPLETE   # resumable: not corrupt
    assert train.main(argv) == 0
    assert [r["step"] for r in _records(job.output_dir)] == [0, 1, 2, 3]


# --------------------------------------------------------------------------------------------
# Disk full
# --------------------------------------------------------------------------------------------

def _snapshot(folder):
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))
            if n in ("checkpoint.pt", "results.jsonl")}


def test_a_failed_checkpoint_write_keeps_the_previous_files_and_resumes(tmp_path, capsys,
                                                                       monkeypatch):
    """The seam: the third checkpoint write fails with ENOSPC (what a full disk raises)."""
    out = tmp_path / "run"
    argv = ["--dataset", "Debug28", "--steps", "4", "--checkpoint_freq", "1", "--output_dir",
            str(out), "--hparams", '{"explain_n": 4}']
    real = train.atomic_open
    seen = {"checkpoints": 0}

    def full_at_third_checkpoint(path, mode="w", fsync=True):
        if path.endswith("checkpoint.pt"):
            seen["checkpoints"] += 1
            if seen["checkpoints"] == 3:
                seen["before"] = _snapshot(out)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, mode, fsync)

    monkeypatch.setattr(train, "atomic_open", full_at_third_checkpoint)
    rc, _, err = _main(capsys, train.main, *argv)
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: cannot write {out}/checkpoint.pt (No space left on device); the files written "
        f"before are intact (resumable from step 2): free space in {out} and run the same "
        f"command again to resume")
    assert _snapshot(out) == seen["before"] and len(seen["before"]) == 2
    assert [r["step"] for r in _records(out)] == [0, 1]
    assert (out / "err.txt").read_text().strip().splitlines()[-1] == err.strip().splitlines()[-1]
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    monkeypatch.setattr(train, "atomic_open", real)   # space freed
    rc, text, _ = _main(capsys, train.main, *argv)
    assert rc == 0 and "resuming at step 2" in text
    ref = tmp_path / "ref"
    assert train.main([str(ref) if a == str(out) else a for a in argv]) == 0
    assert _records(out) == _records(ref)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(folder, leave_bytes):
    """A filler file that leaves about `leave_bytes` free on the file system of `folder`."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    path = os.path.join(folder, "filler")
    with open(path, "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))
    return path


@pytest.mark.slow
def test_disk_full_on_a_real_small_disk(small_disk, tmp_path):
    """A real full disk (tmpfs): the checkpoint write fails, earlier files are kept, one line,
    exit 2; the same command resumes once space is freed and ends as an unbroken run."""
    out = small_disk / "run"
    args = ["--dataset", "Debug28", "--steps", "4", "--checkpoint_freq", "1", "--hparams",
            '{"explain_n": 4}']
    trainer = train.Trainer(train.parse_args([*args, "--output_dir", str(out)]))
    trainer.request_stop()
    with pytest.raises(train.Preempted):
        trainer()   # checkpoint of step 0 (about 330 kB) and one record
    before = _snapshot(out)
    assert os.path.getsize(out / "checkpoint.pt") > 200_000
    filler = _fill(small_disk, 96 * 1024)   # room for records and logs, not a checkpoint
    proc = run_module("domainbed_align.train", *args, "--output_dir", out, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {out}/checkpoint.pt (No space left on device); the files written "
        f"before are intact (resumable from step 1): free space in {out} and run the same "
        f"command again to resume")
    assert _snapshot(out) == before
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    os.remove(filler)
    proc = run_module("domainbed_align.train", *args, "--output_dir", out)
    assert "resuming at step 1" in proc.stdout and (out / "done").exists()
    ref = tmp_path / "ref"
    run_module("domainbed_align.train", *args, "--output_dir", ref)
    assert _records(out) == _records(ref)


# --------------------------------------------------------------------------------------------
# Concurrent launches, queued jobs, a killed launcher
# --------------------------------------------------------------------------------------------

# A launch in its own process whose launcher records the jobs it got, then waits for a file
PROBE = """
import json, os, sys, time
from domainbed_align import launchers, sweep
record, release = sys.argv[1], sys.argv[2]
def probe(jobs, options):
    with open(record, "a") as f:
        for j in jobs:
            f.write(j.output_dir + "\\n")
    print("launched", flush=True)
    while not os.path.exists(release):
        time.sleep(0.05)
launchers.REGISTRY["probe"] = probe
sys.exit(sweep.main(["launch", *sys.argv[3:], "--command_launcher", "probe",
                     "--skip_confirmation"]))
"""

THREE = ["--datasets", "Debug28", "--algorithms", "ERM", "--n_hparams", "1", "--n_trials", "1",
         "--single_test_envs", "--steps", "3"]


def _probe(tmp_path, out, name):
    return subprocess.Popen([sys.executable, "-c", PROBE, str(tmp_path / "record"),
                             str(tmp_path / name), *THREE, "--output_dir", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_launched(proc):
    """Read the probe's output (the job list first) until its launcher has the jobs."""
    for line in proc.stdout:
        if line.strip() == "launched":
            return True
    return False


def _status(capsys, out, *extra):
    rc, text, err = _main(capsys, sweep.main, "status", *THREE, "--output_dir", out, *extra)
    return text.splitlines()[-1]


def test_second_launch_refuses_with_one_line_and_no_job_is_submitted_twice(tmp_path, capsys):
    out = tmp_path / "sw"
    first = _probe(tmp_path, out, "release")
    assert _wait_launched(first)   # holds the sweep lock, jobs queued
    # while it lives: its jobs are Pending (their folders exist), not Incomplete
    assert _status(capsys, out) == ("3 jobs: 0 done, 0 incomplete, 0 not launched, 0 running, "
                                    "3 pending, 0 failed.")
    second = _probe(tmp_path, out, "release")
    _, err2 = second.communicate(timeout=120)
    assert second.returncode == 2 and err2.count("\n") == 1 and "Traceback" not in err2
    assert err2.startswith(f"error: {out}/{sweep.LOCK_FILE} is held by ")
    assert f" {first.pid} " in err2 and "another launch or delete" in err2
    # delete_incomplete neither deletes a queued job nor runs beside a live launch
    rc, _, err = _main(capsys, sweep.main, "delete_incomplete", *THREE, "--output_dir", out,
                       "--skip_confirmation")
    assert rc == 2 and "is held by" in err
    assert len([n for n in os.listdir(out) if not n.startswith(("_", "."))]) == 3
    (tmp_path / "release").write_text("")
    first.communicate(timeout=120)
    assert first.returncode == 0
    dirs = (tmp_path / "record").read_text().split()
    assert len(dirs) == 3 == len(set(dirs))   # each job submitted once, by one launch
    assert not (out / sweep.LOCK_FILE).exists()
    # the launch is over and the probe ran nothing: Incomplete now, and deletable
    assert _status(capsys, out).startswith("3 jobs: 0 done, 3 incomplete,")


def test_a_killed_launcher_leaves_no_stuck_lock_and_no_pending_ghosts(tmp_path, capsys):
    out = tmp_path / "sw"
    first = _probe(tmp_path, out, "never")
    assert _wait_launched(first)
    first.send_signal(signal.SIGKILL)   # no clean-up code runs
    first.wait()
    assert (out / sweep.LOCK_FILE).exists()   # the file stays; the kernel dropped the lock
    assert _status(capsys, out).startswith("3 jobs: 0 done, 3 incomplete, 0 not launched, "
                                           "0 running, 0 pending")
    rc, text, _ = _main(capsys, sweep.main, "delete_incomplete", *THREE, "--output_dir", out,
                        "--skip_confirmation")
    assert rc == 0 and "Deleted 3 jobs!" in text
    second = _probe(tmp_path, out, "release")
    (tmp_path / "release").write_text("")
    second.communicate(timeout=120)
    assert second.returncode == 0


@pytest.mark.slow
def test_a_real_local_launch_shows_running_and_pending(tmp_path, capsys):
    """The real local launcher: one job running, the other two queued (Pending) meanwhile."""
    out = tmp_path / "sw"
    flags = [*THREE[:-1], "400", "--checkpoint_freq", "100", "--hparams", '{"explain_n": 4}',
             "--output_dir", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "domainbed_align.sweep", "launch", *flags,
                             "--skip_confirmation"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline, seen = time.time() + 300, ""
        while time.time() < deadline:
            capsys.readouterr()
            sweep.main(["status", *flags])
            seen = capsys.readouterr().out.splitlines()[-1]
            if " 1 running, 2 pending," in seen:
                break
            time.sleep(0.2)
        assert " 0 incomplete, 0 not launched, 1 running, 2 pending, 0 failed." in seen, seen
    finally:
        proc.kill()   # the launcher and its in-process job die together
        proc.wait()
    capsys.readouterr()
    sweep.main(["status", *flags])
    assert capsys.readouterr().out.splitlines()[-1] == (
        "3 jobs: 0 done, 3 incomplete, 0 not launched, 0 running, 0 pending, 0 failed.")


# --------------------------------------------------------------------------------------------
# Collectors on a live sweep
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _jobs_rewriting_records(out):
    """A thread rewriting the runs' records (atomically, as the trainer does) until the block
    ends: the same records, so tables must not change, while every rewrite invalidates that
    run's cache entry."""
    runs = sorted(n for n in os.listdir(out) if (out / n / "results.jsonl").exists())
    stop = threading.Event()

    def writer():
        from domainbed_align.lib.misc import atomic_write_text
        k = 0
        while not stop.is_set():
            path = out / runs[k % len(runs)] / "results.jsonl"
            atomic_write_text(str(path), path.read_text(), fsync=False)
            k += 1
            time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _concurrently(cmd, n=2):
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(n)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, outs
    assert all("Traceback" not in o[1] for o in outs), outs
    return outs


def test_two_collectors_while_jobs_write(tmp_path):
    """Two collectors run at once while jobs rewrite their records, twice over: each prints the
    tables of a cold read, and afterwards the cache gives exactly what a cold read gives."""
    src = os.path.join(os.path.dirname(__file__), "data", "tiny_sweep")
    out = tmp_path / "sweep"
    shutil.copytree(src, out)
    cmd = [sys.executable, "-m", "domainbed_align.collect_results", "--input_dir", str(out),
           "--workers", "1"]
    with _jobs_rewriting_records(out):
        for _ in range(2):
            outs = _concurrently(cmd)
            assert all(o[0].startswith("Total records: ") for o in outs)
    cold = subprocess.run(cmd + ["--no_cache", "--no_write"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout
    warm = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert warm == cold
    assert all(o[0] == cold for o in outs)


def test_two_page_collectors_into_one_folder_while_jobs_write(tmp_path):
    """Two `--html` collectors writing the same page folder at once, while jobs rewrite their
    records: both succeed, and the folder holds whole files, byte for byte what one cold
    collector writes there (every file is written to a temporary name and renamed)."""
    src = os.path.join(os.path.dirname(__file__), "data", "tiny_sweep")
    out, page = tmp_path / "sweep", tmp_path / "page"
    shutil.copytree(src, out)
    cmd = [sys.executable, "-m", "domainbed_align.collect_results", "--input_dir", str(out),
           "--workers", "1", "--html", str(page)]
    with _jobs_rewriting_records(out):
        _concurrently(cmd)
    concurrent = {n: (page / n).read_bytes() for n in sorted(os.listdir(page))}
    shutil.rmtree(page)
    for name in os.listdir(out):  # a cold read by the same command (the page names it)
        if name.startswith("_collect_cache"):
            os.remove(out / name)
    subprocess.run(cmd, cwd=REPO, capture_output=True, check=True)
    cold = {n: (page / n).read_bytes() for n in sorted(os.listdir(page))}
    assert "index.html" in cold and len(cold) >= 3
    assert concurrent == cold
