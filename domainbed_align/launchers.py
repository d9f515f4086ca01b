"""Launchers: run a sweep's jobs here, in worker processes, one per GPU, or as one SLURM job array.

A job is a `TrainJob`: a picklable callable holding the train arguments as a dict, never a
shell string, so `--hparams` JSON and paths with spaces or quotes reach the trainer unchanged.
Every launcher is a function `(jobs, options) -> None` in `REGISTRY` (DomainBed's
`command_launchers`), plus `slurm`, which submits all jobs of one launch as ONE job array
through submitit and writes each task's SLURM id into its job folder.

What a job leaves in its folder besides the trainer's files: `error.txt` (the traceback, its
last line the message) when it raised, `slurm_job_id` when SLURM runs it, `running` (host and
pid) while a non-SLURM launcher runs it, `queued` (the launcher's host and pid) from launch
until the job starts. `sweep status` reads them. No torch import here: the
trainer is imported inside the job.
"""
import dataclasses
import json
import os
import queue
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
from typing import Callable, Dict, List, Optional, Sequence

import submitit

from domainbed_align.lib.errors import ConfigError, DomainBedAlignError, one_line
from domainbed_align.lib.locks import marker_alive, marker_text
from domainbed_align.lib.misc import atomic_write_text

ERROR_FILE = "error.txt"
SLURM_ID_FILE = "slurm_job_id"
RUNNING_FILE = "running"
QUEUED_FILE = "queued"
SUBMITIT_DIR = "_submitit"   # under the sweep folder; no results.jsonl, so collectors skip it


class JobFailed(DomainBedAlignError):
    """The trainer stopped with a user error (its `error:` line is in err.txt and error.txt)."""


class TrainJob(submitit.helpers.Checkpointable):
    """One sweep job: `python -m domainbed_align.train` with `train_args`, as a callable.

    Checkpointable: when SLURM pre-empts or times the job out, submitit calls `checkpoint()`
    and requeues the returned submission; the trainer then resumes from its own
    `checkpoint.pt` (saved atomically at every checkpoint step) and rewrites `results.jsonl`
    from it, so a requeued job writes no duplicate record.
    """

    def __init__(self, train_args: dict):
        self.train_args = dict(train_args)

    @property
    def output_dir(self) -> str:
        return self.train_args["output_dir"]

    def argv(self) -> List[str]:
        """The train flags, sorted by name: lists spread, booleans as bare flags."""
        out: List[str] = []
        for key, value in sorted(self.train_args.items()):
            if value is None or value is False:
                continue
            out.append(f"--{key}")
            if isinstance(value, (list, tuple)):
                out += [str(v) for v in value]
            elif value is not True:
                out.append(str(value))
        return out

    def command(self) -> List[str]:
        return [sys.executable, "-m", "domainbed_align.train", *self.argv()]

    def __str__(self) -> str:
        return shlex.join(self.command())

    def __call__(self, handle_signals: bool = False) -> str:
        """Train (or resume) to the end; record the error in the job folder if it raises."""
        from domainbed_align import train  # torch: only where the job runs
        error_path = os.path.join(self.output_dir, ERROR_FILE)
        try:
            config = _parse_train_args(train, self.argv())
            train.make_output_dir(self.output_dir)
            if os.path.exists(error_path):
                os.remove(error_path)  # a relaunched failed job starts clean
            unmark_queued(self.output_dir)   # no longer waiting
            slurm_id = _slurm_task_id()
            if slurm_id:
                atomic_write_text(os.path.join(self.output_dir, SLURM_ID_FILE), slurm_id + "\n")
            return train.run(config, handle_signals=handle_signals)
        except train.Preempted:
            raise
        except DomainBedAlignError as e:
            _record_error(error_path, f"error: {one_line(e)}\n")
            raise JobFailed(f"{self.output_dir}: {one_line(e)}") from None
        except Exception:
            _record_error(error_path, traceback.format_exc())
            raise

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Requeue a fresh job with the same arguments; the trainer's checkpoint carries the state."""
        return submitit.helpers.DelayedSubmission(TrainJob(self.train_args), *args, **kwargs)


def _parse_train_args(train, argv: List[str]):
    """argparse exits on a bad flag (SystemExit, which submitit would not record): an error."""
    try:
        return train.parse_args(argv)
    except SystemExit as e:
        raise ConfigError(f"the trainer refused the job's flags (exit {e.code}): "
                          f"{shlex.join(argv)}") from None


def mark_queued(output_dir: str) -> None:
    """`queued`: this launcher's host and pid; status shows the job Pending while it lives."""
    atomic_write_text(os.path.join(output_dir, QUEUED_FILE), marker_text(), fsync=False)


def unmark_queued(output_dir: str) -> None:
    _remove(os.path.join(output_dir, QUEUED_FILE))


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _record_error(path: str, text: str) -> None:
    try:
        atomic_write_text(path, text)
    except OSError:
        pass  # the folder itself is gone or unwritable; the exception still propagates


def _slurm_task_id() -> Optional[str]:
    """`<array job id>_<task id>` (or the plain job id) when running under SLURM."""
    array_id, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_id and task:
        return f"{array_id}_{task}"
    return os.environ.get("SLURM_JOB_ID")


# ------------------------------------------------------------------------------------------
# Options shared by the launchers (sweep.py fills them from flags)
# ------------------------------------------------------------------------------------------

@dataclasses.dataclass
class LaunchOptions:
    """Launcher settings; the slurm_* names and units follow submitit's parameters."""

    sweep_dir: str = "sweep_output"
    local_workers: int = 1
    slurm_partition: Optional[str] = None
    slurm_account: Optional[str] = None
    slurm_qos: Optional[str] = None
    slurm_constraint: Optional[str] = None
    timeout_min: int = 24 * 60
    mem_gb: Optional[float] = None
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    slurm_array_parallelism: int = 256
    slurm_additional_parameters: Optional[Dict[str, object]] = None
    slurm_setup: Sequence[str] = ()


REGISTRY: Dict[str, Callable[[List[TrainJob], LaunchOptions], None]] = {}


def register_launcher(name: str):
    def deco(fn):
        if name in REGISTRY:
            raise ValueError(f"launcher {name!r} is registered twice")
        REGISTRY[name] = fn
        return fn
    return deco


@register_launcher("dummy")
def dummy_launcher(jobs: List[TrainJob], options: LaunchOptions) -> None:
    """Print each job's command; run nothing."""
    for job in jobs:
        print(f"Dummy launcher: {job}")


@register_launcher("local")
def local_launcher(jobs: List[TrainJob], options: LaunchOptions) -> None:
    """One after another in this process, or `local_workers` at a time in worker processes.

    A job that fails is recorded in its folder (error.txt) and the sweep goes on."""
    if options.local_workers > 1:
        threads = max(1, (os.cpu_count() or 1) // options.local_workers)
        _run_in_processes(jobs, [{"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
                                 for _ in range(options.local_workers)])
        return
    from domainbed_align.train import Preempted
    n_failed = 0
    for k, job in enumerate(jobs):
        print(f"[{k + 1}/{len(jobs)}] {job.output_dir}", flush=True)
        try:
            with _running_marker(job.output_dir):
                job(handle_signals=True)
        except Preempted as e:  # SIGTERM/SIGUSR2 stop the sweep, not just this job
            print(f"sweep stopped after {k} of {len(jobs)} job(s): {e}", file=sys.stderr)
            sys.exit(128 + e.signum)
        except Exception as e:  # noqa: BLE001 - one job's failure must not stop the sweep
            n_failed += 1
            print(f"job failed: {job.output_dir}: {_last_line(e)}", file=sys.stderr, flush=True)
    if n_failed:
        print(f"{n_failed} of {len(jobs)} job(s) failed; `sweep status --failed` lists them",
              file=sys.stderr)


@register_launcher("pool")
def pool_launcher(jobs: List[TrainJob], options: LaunchOptions) -> None:
    """`local_workers` long-lived worker processes, each running jobs one after another in
    itself: no interpreter, torch and data start-up per job (about 4 s on a CPU, more with
    CUDA), which dominates runs of a few hundred steps. With one GPU, the workers share it:
    many small runs keep it busy where one cannot. A failed job is recorded and the sweep
    goes on, as with `local`."""
    import multiprocessing
    threads = max(1, (os.cpu_count() or 1) // options.local_workers)
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    n_failed, start = 0, time.time()
    with ctx.Pool(options.local_workers, initializer=_pool_worker_init, initargs=(threads,)) as pool:
        for k, (output_dir, error) in enumerate(
                pool.imap_unordered(_pool_run, [job.train_args for job in jobs])):
            print(f"[{k + 1}/{len(jobs)}] {time.time() - start:7.1f} s {output_dir}"
                  + (f" failed: {error}" if error else ""), flush=True)
            n_failed += error is not None
    if n_failed:
        print(f"{n_failed} of {len(jobs)} job(s) failed; `sweep status --failed` lists them",
              file=sys.stderr)


def _pool_worker_init(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch
    torch.set_num_threads(threads)


def _pool_run(train_args: dict):
    """-> (output folder, None or the error's last line); never raises (one job, not the pool)."""
    job = TrainJob(train_args)
    try:
        with _running_marker(job.output_dir), _quiet():
            job(handle_signals=False)
        return job.output_dir, None
    except BaseException as e:  # noqa: BLE001 - report, keep the worker for the next job
        return job.output_dir, _last_line(e)


class _quiet:
    """The trainer's per-step lines go to the job's out.txt, not to the pool's terminal."""

    def __enter__(self):
        self.saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = open(os.devnull, "w")

    def __exit__(self, *exc):
        sys.stdout.close()
        sys.stdout, sys.stderr = self.saved


@register_launcher("multi_gpu")
def multi_gpu_launcher(jobs: List[TrainJob], options: LaunchOptions) -> None:
    """One worker process per visible GPU (CUDA_VISIBLE_DEVICES, else nvidia-smi), DomainBed's."""
    gpus = _visible_gpus()
    if not gpus:
        raise ConfigError("--command_launcher multi_gpu found no GPU (CUDA_VISIBLE_DEVICES "
                          "empty, nvidia-smi absent); use --command_launcher local or slurm")
    _run_in_processes(jobs, [{"CUDA_VISIBLE_DEVICES": g} for g in gpus])


def _visible_gpus() -> List[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                         capture_output=True, text=True)
    return [g.strip() for g in out.stdout.splitlines() if g.strip()] if out.returncode == 0 else []


def _run_in_processes(jobs: List[TrainJob], slot_envs: List[Dict[str, str]]) -> None:
    """Each slot (a CPU share or a GPU) runs jobs one after another, each in a fresh process
    `python -m domainbed_align.launchers run-job <json>` (an argv list, no shell)."""
    todo: "queue.Queue[TrainJob]" = queue.Queue()
    for job in jobs:
        todo.put(job)
    failed: List[str] = []
    lock = threading.Lock()

    def slot(extra_env):
        env = {**os.environ, **extra_env}
        while True:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            with lock:
                print(f"[{len(jobs) - todo.qsize()}/{len(jobs)}] {job.output_dir}", flush=True)
            proc = subprocess.run([sys.executable, "-m", "domainbed_align.launchers", "run-job",
                                   json.dumps(job.train_args)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if proc.returncode != 0:
                with lock:
                    failed.append(job.output_dir)
                    print(f"job failed (exit {proc.returncode}): {job.output_dir}: "
                          f"{last_error_line(job.output_dir)}", file=sys.stderr, flush=True)

    threads = [threading.Thread(target=slot, args=(e,), daemon=True) for e in slot_envs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        print(f"{len(failed)} of {len(jobs)} job(s) failed; `sweep status --failed` lists them",
              file=sys.stderr)


class _running_marker:
    """`running` holds host and pid while a non-SLURM launcher runs the job (for status)."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, RUNNING_FILE)

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        atomic_write_text(self.path, f"{socket.gethostname()} {os.getpid()}\n")

    def __exit__(self, *exc):
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass


def is_running_here(output_dir: str) -> bool:
    """True when a live process on this host holds the job's `running` marker."""
    return marker_alive(os.path.join(output_dir, RUNNING_FILE))


def _last_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


def last_error_line(output_dir: str) -> str:
    """The last non-empty line of the job's error.txt (the message of a traceback)."""
    try:
        with open(os.path.join(output_dir, ERROR_FILE), errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1] if lines else "(empty error.txt)"
    except OSError:
        return "(no error.txt)"


# ------------------------------------------------------------------------------------------
# SLURM through submitit
# ------------------------------------------------------------------------------------------

SLURM_FLAGS = ("slurm_partition", "slurm_account", "slurm_qos", "slurm_constraint", "timeout_min",
               "mem_gb", "gpus_per_job", "cpus_per_job", "slurm_array_parallelism",
               "slurm_additional_parameters", "slurm_setup")


def slurm_executor(options: LaunchOptions) -> "submitit.AutoExecutor":
    """An AutoExecutor on the SLURM cluster, logs under `<sweep_dir>/_submitit/`."""
    folder = os.path.join(os.path.abspath(options.sweep_dir), SUBMITIT_DIR, "%j")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    extra = dict(options.slurm_additional_parameters or {})
    for name in ("account", "qos", "constraint"):
        value = getattr(options, f"slurm_{name}")
        if value:
            extra[name] = value
    params = {"timeout_min": options.timeout_min, "cpus_per_task": options.cpus_per_job, "tasks_per_node": 1, "nodes": 1,
              "slurm_array_parallelism": options.slurm_array_parallelism,
              "slurm_setup": list(options.slurm_setup) + [_python_path_setup()],
              "name": "domainbed_align"}
    if options.gpus_per_job:  # 0: no GPU request at all (clusters without GRES refuse one)
        params["gpus_per_node"] = options.gpus_per_job
    if options.slurm_partition:
        params["slurm_partition"] = options.slurm_partition
    if options.mem_gb is not None:
        params["mem_gb"] = options.mem_gb
    if extra:
        params["slurm_additional_parameters"] = extra
    executor.update_parameters(**params)
    return executor


def _python_path_setup() -> str:
    """The job runs this Python (submitit uses sys.executable); this line makes sure it also
    imports this very package, also when it is not installed (a source checkout)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return f"export PYTHONPATH={shlex.quote(root)}${{PYTHONPATH:+:$PYTHONPATH}}"


@register_launcher("slurm")
def slurm_launcher(jobs: List[TrainJob], options: LaunchOptions) -> None:
    """All jobs in one SLURM job array (one sbatch call); ids written into the job folders."""
    if not jobs:
        return
    executor = slurm_executor(options)
    chunk = max_array_size() or len(jobs)  # a cluster caps array size: split only then
    arrays = []
    for start in range(0, len(jobs), chunk):
        part = jobs[start:start + chunk]
        submitted = executor.submit_array(part)
        for job, sub in zip(part, submitted):
            atomic_write_text(os.path.join(job.output_dir, SLURM_ID_FILE), f"{sub.job_id}\n",
                              fsync=False)
        arrays.append(submitted[0].job_id.split("_")[0])
    print(f"Submitted {len(jobs)} job(s) as SLURM array{'s' if len(arrays) > 1 else ''} "
          f"{', '.join(arrays)}; logs in {os.path.join(options.sweep_dir, SUBMITIT_DIR)}")


def max_array_size() -> Optional[int]:
    """The cluster's MaxArraySize (array indices must stay below it), or None if unknown."""
    try:
        proc = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return max(1, int(value.strip()))
    return None


def _run_job_main(argv: Sequence[str]) -> int:
    """`python -m domainbed_align.launchers run-job '<train args JSON>'` (worker processes)."""
    if len(argv) != 2 or argv[0] != "run-job":
        print("usage: python -m domainbed_align.launchers run-job '<train args JSON>'",
              file=sys.stderr)
        return 2
    from domainbed_align.train import Preempted
    job = TrainJob(json.loads(argv[1]))
    try:
        with _running_marker(job.output_dir):
            job(handle_signals=True)
    except Preempted as e:
        return 128 + e.signum
    except DomainBedAlignError:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_run_job_main(sys.argv[1:]))
