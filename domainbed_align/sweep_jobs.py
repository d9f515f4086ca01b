"""A sweep's jobs: what they are, where they live and what state each is in.

A job is one train run addressed by content: its folder is `<output_dir>/<md5 of the
sorted-keys JSON of its train args>`, exactly upstream's `sweep.Job`, so upstream and our sweeps
name the same run the same folder. Its state is read, never stored: from the files in that
folder (`done`, `error.txt`, the recorded SLURM id) and then one squeue call (and one sacct call
where accounting is on). Apart from `sweep.py` so that it reads as its commands, and the job
list and the state rules can be read on their own.
"""
import hashlib
import itertools
import json
import os
import shutil
import subprocess
from typing import Dict, List, Optional, Sequence

from domainbed_align import catalog, launchers
from domainbed_align.lib import integrity
from domainbed_align.lib.locks import marker_alive
from domainbed_align.lib.misc import seed_hash

DONE, INCOMPLETE, NOT_LAUNCHED = "Done", "Incomplete", "Not launched"   # upstream's states
RUNNING, PENDING, FAILED = "Running", "Pending", "Failed"
CORRUPT = "Corrupt"   # a damaged file (records, model, checkpoint): the detail says what to delete
STATES = (DONE, INCOMPLETE, NOT_LAUNCHED, RUNNING, PENDING, FAILED, CORRUPT)


# ------------------------------------------------------------------------------------------
# Jobs
# ------------------------------------------------------------------------------------------

def job_dir_name(train_args: dict) -> str:
    """Upstream's job identity: md5 hex of the sorted-keys JSON of the train args."""
    return hashlib.md5(json.dumps(train_args, sort_keys=True).encode("utf-8")).hexdigest()


class Job:
    """One run of the sweep: its train args, folder and state (DomainBed's `sweep.Job`)."""

    def __init__(self, train_args: dict, sweep_output_dir: str):
        self.output_dir = os.path.join(sweep_output_dir, job_dir_name(train_args))
        self.train_args = dict(train_args, output_dir=self.output_dir)
        self.state = NOT_LAUNCHED
        self.detail = ""   # Failed: the last line of its error
        self.slurm_id: Optional[str] = None

    def train_job(self) -> launchers.TrainJob:
        return launchers.TrainJob(self.train_args)

    def __str__(self) -> str:
        a = self.train_args
        info = (a["dataset"], a["algorithm"], a["test_envs"], a["hparams_seed"])
        return f"{self.state}: {self.output_dir} {info}"


def test_env_lists(n_envs: int, task: str, single_test_envs: bool,
                   only: Optional[Sequence[int]] = None) -> List[List[int]]:
    """Leave-one-domain-out: every [i] then its pairs [i, j] (j > i), or only the [i] with
    --single_test_envs; single_source: each domain in turn is the only training domain.
    `only` (--test_envs): leave-one-domain-out with just these held-out domains, as [i] each."""
    if task == "single_source":
        return [[j for j in range(n_envs) if j != i] for i in range(n_envs)]
    if only:
        return [[i] for i in only]
    out = []
    for i in range(n_envs):
        out.append([i])
        if not single_test_envs and n_envs > 2:  # with two domains a pair leaves none to train on
            out += [[i, j] for j in range(i + 1, n_envs)]
    return out


def tasks(cfg: dict) -> List[str]:
    return [cfg["task"]] if isinstance(cfg["task"], str) else list(cfg["task"])


def make_args_list(cfg: dict) -> List[dict]:
    """DomainBed's nesting: trial_seed -> dataset -> algorithm -> test_envs -> hparams_seed
    (with several tasks, each algorithm's test_envs of the first task, then the next)."""
    args_list = []
    for trial_seed in range(cfg["n_trials"]):
        for dataset in cfg["datasets"]:
            for algorithm, task in ((a, t) for a in cfg["algorithms"] for t in tasks(cfg)):
                for test_envs in test_env_lists(n_environments(dataset, cfg["data_dir"]), task,
                                                cfg["single_test_envs"], cfg["test_envs"]):
                    for variant, hparams_seed in itertools.product(
                            grid_variants(cfg["hparams_grid"]),
                            range(cfg["n_hparams_from"], cfg["n_hparams"])):
                        args = {"dataset": dataset, "algorithm": algorithm, "test_envs": test_envs,
                                "holdout_fraction": cfg["holdout_fraction"],
                                "hparams_seed": hparams_seed, "data_dir": cfg["data_dir"],
                                "task": task, "trial_seed": trial_seed,
                                "seed": seed_hash(dataset, algorithm, test_envs, hparams_seed,
                                                  trial_seed)}
                        # upstream's optional keys, then ours: only when set
                        for key in ("steps", "hparams", "checkpoint_freq", "mask_dir"):
                            if cfg[key] is not None:
                                args[key] = cfg[key]
                        if cfg["idtest_fraction"]:   # 0 and unset: upstream's args exactly
                            args["idtest_fraction"] = cfg["idtest_fraction"]
                        if cfg["tensorboard"]:        # unset: job folders as before
                            args["tensorboard"] = True
                        own = {**(cfg["algorithm_hparams"] or {}).get(algorithm, {}), **variant}
                        if own:
                            args["hparams"] = job_hparams(cfg["hparams"], own)
                        args_list.append(args)
    return args_list


def grid_variants(grid) -> List[dict]:
    """`hparams_grid` -> the list of override dicts, one per job variant ([{}] without a grid).

    A list of objects is taken as is; an object of lists is expanded to their product, in the
    order the names are given: {"a": [1, 2], "b": ["x"]} -> [{a: 1, b: x}, {a: 2, b: x}]."""
    if not grid:
        return [{}]
    if isinstance(grid, dict):
        names = list(grid)
        values = [v if isinstance(v, list) else [v] for v in grid.values()]
        return [dict(zip(names, combo)) for combo in itertools.product(*values)]
    return [dict(v) for v in grid]


def job_hparams(shared: Optional[str], own: dict) -> str:
    """The --hparams JSON of a job with its own overrides (its algorithm's, then its grid
    variant's); they win over the sweep-wide --hparams."""
    return json.dumps({**(json.loads(shared) if shared else {}), **own}, sort_keys=True)


def n_environments(dataset: str, data_dir: Optional[str] = None) -> int:
    envs = catalog.DATASET_ENVIRONMENTS.get(dataset)
    if envs is None:  # DomainFolder or a plug-in: ask the registry (imports torch)
        from domainbed_align.datasets import get_dataset_class
        envs = get_dataset_class(dataset).environments(data_dir)
    return len(envs)


# ------------------------------------------------------------------------------------------
# State: files, then one squeue call (and one sacct call where accounting is on)
# ------------------------------------------------------------------------------------------

_SQUEUE_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED", "SIGNALING",
                   "STAGE_OUT", "RESIZING"}


def squeue_states() -> Optional[Dict[str, str]]:
    """job id (`<array>_<task>` for array tasks) -> SLURM state, for this user's jobs; one call.
    None when squeue is absent or fails (then state comes from files only)."""
    if shutil.which("squeue") is None:
        return None
    user = os.environ.get("USER") or _whoami()
    cmd = ["squeue", "-h", "-r", "-o", "%i %T"] + (["-u", user] if user else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


def sacct_states(ids: Sequence[str]) -> Dict[str, str]:
    """Final SLURM states of finished jobs (one sacct call); {} when accounting is off."""
    if not ids or shutil.which("sacct") is None:
        return {}
    arrays = sorted({i.split("_")[0] for i in ids})
    try:
        proc = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j",
                               ",".join(arrays)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if proc.returncode != 0:
        return {}
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 2:
            out[parts[0]] = parts[1].split()[0] if parts[1].split() else ""
    return out


def _whoami() -> Optional[str]:
    try:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return None


def _read_slurm_id(output_dir: str) -> Optional[str]:
    try:
        with open(os.path.join(output_dir, launchers.SLURM_ID_FILE)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def update_states(jobs: List[Job], sweep_dir: str) -> None:
    """Set each job's state: Done / Running / Pending / Failed / Incomplete / Not launched."""
    undecided = []
    for job in jobs:
        if os.path.exists(os.path.join(job.output_dir, "done")):
            problem = integrity.done_run_problem(job.output_dir)
            job.state, job.detail = (CORRUPT, problem) if problem else (DONE, "")
        elif not os.path.isdir(job.output_dir):
            job.state = NOT_LAUNCHED
        else:
            job.slurm_id = _read_slurm_id(job.output_dir)
            undecided.append(job)
    queued = squeue_states() if any(j.slurm_id for j in undecided) else None
    gone = []
    for job in undecided:
        slurm_state = queued.get(job.slurm_id) if queued is not None and job.slurm_id else None
        if slurm_state is not None:
            job.state = RUNNING if slurm_state in _SQUEUE_RUNNING else PENDING
        elif job.slurm_id is None and launchers.is_running_here(job.output_dir):
            job.state = RUNNING
        elif marker_alive(os.path.join(job.output_dir, launchers.QUEUED_FILE)):
            job.state = PENDING   # queued by a live local launcher (its folder made up front)
        elif os.path.exists(os.path.join(job.output_dir, launchers.ERROR_FILE)):
            job.state = FAILED
            job.detail = launchers.last_error_line(job.output_dir)
        elif problem := integrity.unfinished_run_problem(job.output_dir):
            job.state, job.detail = CORRUPT, problem
        elif job.slurm_id and queued is not None:
            gone.append(job)   # submitted, out of the queue, no `done`: it will never finish
        else:
            job.state = INCOMPLETE
    final = sacct_states([j.slurm_id for j in gone])
    for job in gone:
        if os.path.exists(os.path.join(job.output_dir, "done")):  # finished since we looked
            problem = integrity.done_run_problem(job.output_dir)
            job.state, job.detail = (CORRUPT, problem) if problem else (DONE, "")
            continue
        # Failed whatever its exit code (a job that raised may still exit 0): only `done` is
        # success. The reason: SLURM's final state where accounting keeps it, and the log
        state = final.get(job.slurm_id, "")
        job.state = FAILED
        job.detail = (f"SLURM job {job.slurm_id} left the queue without `done` "
                      f"({'state ' + state if state else 'killed, node failure or time limit'}); "
                      f"log: " + _submitit_log_tail(sweep_dir, job.slurm_id))


def _submitit_log_tail(sweep_dir: str, slurm_id: str) -> str:
    path = os.path.join(sweep_dir, launchers.SUBMITIT_DIR, slurm_id, f"{slurm_id}_0_log.err")
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1] if lines else f"see {path}"
    except OSError:
        return f"no log at {path}"


def summary_line(jobs: List[Job]) -> str:
    """Upstream's `N jobs: a done, b incomplete, c not launched.` plus our states."""
    count = {s: sum(1 for j in jobs if j.state == s) for s in STATES}
    corrupt = f", {count[CORRUPT]} corrupt" if count[CORRUPT] else ""
    return (f"{len(jobs)} jobs: {count[DONE]} done, {count[INCOMPLETE]} incomplete, "
            f"{count[NOT_LAUNCHED]} not launched, {count[RUNNING]} running, "
            f"{count[PENDING]} pending, {count[FAILED]} failed{corrupt}.")
