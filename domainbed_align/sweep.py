"""A DomainBed sweep: `python -m domainbed_align.sweep {launch,status,delete_incomplete,delete_all}`.

DomainBed's flags, job list and job identity: a job's folder is `<output_dir>/<md5 of the
sorted-keys JSON of its train args>`, exactly upstream's `sweep.Job`, so upstream and our
sweeps name the same run the same folder. State lives on disk (`done`, `error.txt`, the
recorded SLURM id), so `launch` again only fills gaps: it submits Not launched and Failed jobs,
never a running one.

    python -m domainbed_align.sweep launch            # the quick built-in sweep, here, on CPU
    python -m domainbed_align.sweep launch --config sweeps/vlcs_paper.json --data_dir /data
    python -m domainbed_align.sweep status --config sweeps/vlcs_paper.json --failed

`--config FILE` holds the same keys as the flags (flags win; an unknown key is an error).
Without `--config` and without any flag that defines jobs, the quick sweep
(`sweeps/quick.json`) is used. No torch import unless `launch` validates names.
"""
import argparse
import hashlib
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from domainbed_align import catalog, launchers
from domainbed_align.datasets.masks import missing_masks_message
from domainbed_align.lib import integrity
from domainbed_align.lib.errors import ConfigError, DomainBedAlignError
from domainbed_align.lib.locks import FileLock, marker_alive
from domainbed_align.lib.misc import seed_hash

COMMANDS = ("launch", "status", "delete_incomplete", "delete_all")
TASKS = ("domain_generalization", "single_source")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEPS_DIR = os.path.join(REPO, "sweeps")
QUICK_CONFIG = os.path.join(SWEEPS_DIR, "quick.json")

# DomainBed's defaults (its required flags get the quick sweep's places).
DEFAULTS = {
    "datasets": None,             # every registered dataset but the Debug ones
    "algorithms": None,           # every registered algorithm
    "task": "domain_generalization",
    "n_hparams_from": 0,
    "n_hparams": 20,
    "output_dir": "./sweep_output",
    "data_dir": "./data",
    "seed": 0,
    "n_trials": 3,
    "command_launcher": "local",
    "steps": None,
    "checkpoint_freq": None,
    "hparams": None,
    "algorithm_hparams": None,    # ours: {"ALIGN": {...}} on top of --hparams for one algorithm
    "hparams_grid": None,         # ours: [{...}, {...}] or {"name": [values]}: one job per variant
    "holdout_fraction": 0.2,
    "idtest_fraction": None,      # ours: an ID test split of each training domain (train flag)
    "single_test_envs": False,
    "tensorboard": False,         # ours: jobs also write TensorBoard event files (train flag)
    "test_envs": None,            # ours: only these held-out domains (domain_generalization)
    "skip_confirmation": False,
    "mask_dir": None,
    "local_workers": 1,
    "slurm_partition": None,
    "slurm_account": None,
    "slurm_qos": None,
    "slurm_constraint": None,
    "timeout_min": 24 * 60,
    "mem_gb": None,
    "gpus_per_job": 1,
    "cpus_per_job": 8,
    "slurm_array_parallelism": 256,
    "slurm_additional_parameters": None,
    "slurm_setup": [],
}
# Flags that define the job list: with none of them (and no --config) the quick sweep runs.
JOB_FLAGS = ("datasets", "algorithms", "task", "n_hparams_from", "n_hparams", "n_trials", "steps",
             "checkpoint_freq", "hparams", "algorithm_hparams", "hparams_grid", "test_envs",
             "holdout_fraction", "idtest_fraction",
             "single_test_envs", "mask_dir")

DONE, INCOMPLETE, NOT_LAUNCHED = "Done", "Incomplete", "Not launched"   # upstream's states
RUNNING, PENDING, FAILED = "Running", "Pending", "Failed"
CORRUPT = "Corrupt"   # a damaged file (records, model, checkpoint): the detail says what to delete
STATES = (DONE, INCOMPLETE, NOT_LAUNCHED, RUNNING, PENDING, FAILED, CORRUPT)
# Held by launch and delete_* for as long as they run (a local launch: until its jobs end)
LOCK_FILE = ".sweep.lock"


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


# ------------------------------------------------------------------------------------------
# Configuration: defaults < --config file < flags
# ------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    """Flags only (defaults live in DEFAULTS so we can tell which were given)."""
    p = _Parser(prog="python -m domainbed_align.sweep", argument_default=argparse.SUPPRESS,
                description="Launch, watch and clean a DomainBed sweep (local, multi-GPU or "
                            "SLURM job arrays).")
    p.add_argument("command", choices=COMMANDS)
    p.add_argument("--config", help="sweep definition (JSON with the flags' names as keys), e.g. "
                                    "sweeps/vlcs_paper.json; flags win over it")
    p.add_argument("--datasets", nargs="+", type=str)
    p.add_argument("--algorithms", nargs="+", type=str)
    p.add_argument("--task", type=str, nargs="+", choices=TASKS,
                   help="domain_generalization (default: leave-one-domain-out) and/or "
                        "single_source (train on one domain, test on the others)")
    p.add_argument("--n_hparams_from", type=int)
    p.add_argument("--n_hparams", type=int)
    p.add_argument("--output_dir", type=str, help="sweep folder (default ./sweep_output)")
    p.add_argument("--data_dir", type=str, help="data folder (default ./data)")
    p.add_argument("--seed", type=int, help="seeds the launch order (upstream ignores it)")
    p.add_argument("--n_trials", type=int)
    p.add_argument("--command_launcher", type=str, choices=sorted(launchers.REGISTRY))
    p.add_argument("--steps", type=int)
    p.add_argument("--checkpoint_freq", type=int, help="steps between records (ours)")
    p.add_argument("--hparams", type=str, help="JSON object applied on top of every job's hparams")
    p.add_argument("--algorithm_hparams", type=_json_object,
                   help="JSON object of algorithm -> hparams applied on top of --hparams for that "
                        "algorithm only, e.g. '{\"ALIGN\": {\"align_warmup_steps\": 300}}'")
    p.add_argument("--hparams_grid", type=_json_grid,
                   help="one job per variant, on top of --hparams and --algorithm_hparams: a JSON "
                        "list of objects, or an object of lists expanded to their product, e.g. "
                        "'{\"cue_agreement\": [0.5, 0.7, 0.9]}'")
    p.add_argument("--holdout_fraction", type=float)
    p.add_argument("--idtest_fraction", type=float,
                   help="ours: every job also holds out this fraction of each training domain as "
                        "an ID test split (unset or 0: upstream's jobs and folders exactly)")
    p.add_argument("--single_test_envs", action="store_true")
    p.add_argument("--tensorboard", action="store_true",
                   help="ours: every job writes TensorBoard event files in its folder, so "
                        "`tensorboard --logdir OUTPUT_DIR` shows the sweep live")
    p.add_argument("--test_envs", type=int, nargs="+",
                   help="domain_generalization with only these held-out domains, one job list "
                        "[i] each (e.g. 3: the shortcut-breaking domain of SpuriousDigits)")
    p.add_argument("--skip_confirmation", action="store_true")
    p.add_argument("--mask_dir", type=str, help="relevance-mask folder, passed to every job")
    p.add_argument("--failed", action="store_true", help="status: list failed jobs and errors")
    p.add_argument("--local_workers", type=int, help="local launcher: jobs in N processes")
    s = p.add_argument_group("slurm launcher (names as submitit's parameters)")
    s.add_argument("--slurm_partition", type=str)
    s.add_argument("--slurm_account", type=str)
    s.add_argument("--slurm_qos", type=str)
    s.add_argument("--slurm_constraint", type=str)
    s.add_argument("--timeout_min", type=int)
    s.add_argument("--mem_gb", type=float)
    s.add_argument("--gpus_per_job", type=int)
    s.add_argument("--cpus_per_job", type=int)
    s.add_argument("--slurm_array_parallelism", type=int)
    s.add_argument("--slurm_additional_parameters", type=_json_object,
                   help="JSON object of extra sbatch parameters, e.g. '{\"exclude\": \"node3\"}'")
    s.add_argument("--slurm_setup", action="append",
                   help="shell line run before each job, e.g. 'module load cuda' (repeatable)")
    return p


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


def _json_grid(text: str):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg}): {text!r}") from None
    if isinstance(value, dict) and value and all(isinstance(v, list) and v for v in value.values()):
        return value
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return value
    raise argparse.ArgumentTypeError(f"must be a non-empty JSON list of objects or an object of "
                                     f"non-empty lists, got {text!r}")


def find_config(name: str) -> str:
    """A path, or a name under the package's sweeps/ folder (`quick`, `vlcs_paper.json`)."""
    for path in (name, os.path.join(SWEEPS_DIR, name), os.path.join(SWEEPS_DIR, name + ".json")):
        if os.path.isfile(path):
            return path
    known = sorted(f for f in os.listdir(SWEEPS_DIR) if f.endswith(".json")) \
        if os.path.isdir(SWEEPS_DIR) else []
    raise ConfigError(f"--config {name}: no such file; ready sweeps: {', '.join(known) or 'none'}")


def read_config(path: str) -> dict:
    """A sweep JSON file -> flag values, checked by the same parser as the command line."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config {path} is not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path} must hold a JSON object of flag names to values")
    raw = {k: v for k, v in raw.items() if not k.startswith("_")}   # "_comment" keys
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"--config {path}: unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(DEFAULTS)}")
    argv = ["status"]
    for key, value in raw.items():
        if isinstance(value, bool):
            if value and isinstance(DEFAULTS[key], bool):
                argv.append(f"--{key}")
            elif not isinstance(DEFAULTS[key], bool):
                raise ConfigError(f"--config {path}: {key} must not be true/false")
            continue
        if value is None:
            continue
        if key == "slurm_setup":
            for line in value if isinstance(value, list) else [value]:
                argv += [f"--{key}", str(line)]
        elif key == "hparams_grid":
            argv += [f"--{key}", json.dumps(value)]
        elif isinstance(value, list):
            argv += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        else:
            argv += [f"--{key}", str(value)]
    try:
        ns = vars(build_parser().parse_args(argv))
    except ConfigError as e:
        raise ConfigError(f"--config {path}: {e}") from None
    ns.pop("command")
    return ns


def resolve(argv: Optional[List[str]]) -> Tuple[str, dict, dict]:
    """-> (command, config, where each value came from: 'cli' | 'config' | 'default')."""
    cli = vars(build_parser().parse_args(argv))
    command = cli.pop("command")
    failed = cli.pop("failed", False)
    config_path = cli.pop("config", None)
    if config_path is None and not any(k in cli for k in JOB_FLAGS):
        config_path = QUICK_CONFIG
        if not os.path.isfile(config_path):
            raise ConfigError(f"the quick sweep definition {config_path} is missing; pass "
                              f"--datasets and --algorithms, or --config FILE")
    from_file = read_config(find_config(config_path)) if config_path else {}
    cfg, source = {}, {}
    for key, default in DEFAULTS.items():
        if key in cli:
            cfg[key], source[key] = cli[key], "cli"
        elif key in from_file:
            cfg[key], source[key] = from_file[key], "config"
        else:
            cfg[key], source[key] = default, "default"
    cfg["failed"] = failed
    cfg["config_path"] = config_path
    if cfg["datasets"] is None:
        cfg["datasets"] = [d for d in catalog.DATASET_ENVIRONMENTS if "Debug" not in d]
    if cfg["algorithms"] is None:
        from domainbed_align.algorithms import ALGORITHMS
        cfg["algorithms"] = list(ALGORITHMS)
    return command, cfg, source


def check_config(cfg: dict, source: dict) -> None:
    """Mistakes visible without the registries (every command)."""
    if cfg["n_hparams_from"] >= cfg["n_hparams"]:
        raise ConfigError(f"--n_hparams_from {cfg['n_hparams_from']} must be below --n_hparams "
                          f"{cfg['n_hparams']} (hparams seeds are range(from, n))")
    if cfg["n_trials"] < 1 or cfg["n_hparams_from"] < 0:
        raise ConfigError("--n_trials must be >= 1 and --n_hparams_from >= 0")
    for flag in ("steps", "checkpoint_freq"):
        if cfg[flag] is not None and cfg[flag] < 1:
            raise ConfigError(f"--{flag} must be a positive number of steps, got {cfg[flag]}")
    if not 0 <= cfg["holdout_fraction"] < 1:
        raise ConfigError(f"--holdout_fraction must be in [0, 1), got {cfg['holdout_fraction']}")
    idtest = cfg["idtest_fraction"] or 0
    if not (isinstance(idtest, (int, float)) and idtest >= 0
            and cfg["holdout_fraction"] + idtest < 1):
        raise ConfigError(f"--idtest_fraction must be a number >= 0 with holdout_fraction + "
                          f"idtest_fraction < 1, got {cfg['idtest_fraction']!r}")
    if cfg["hparams"] is not None:
        try:
            value = json.loads(cfg["hparams"])
        except json.JSONDecodeError as e:
            raise ConfigError(f"--hparams is not valid JSON ({e.msg} at char {e.pos}): "
                              f"{cfg['hparams']!r}; example: --hparams '{{\"lr\": 1e-4}}'") from None
        if not isinstance(value, dict):
            raise ConfigError(f"--hparams must be a JSON object like '{{\"lr\": 1e-4}}', got "
                              f"{cfg['hparams']!r}")
    launcher = cfg["command_launcher"]
    if launcher != "slurm":
        # a flag is wrong when given beside a non-slurm launcher from the same place or below
        rank = {"default": 0, "config": 1, "cli": 2}
        bad = [k for k in launchers.SLURM_FLAGS if source[k] != "default"
               and rank[source[k]] >= rank[source["command_launcher"]]]
        if bad:
            raise ConfigError(f"--{bad[0]} is a SLURM flag but --command_launcher is {launcher}; "
                              f"add --command_launcher slurm or drop it")
    if launcher not in ("local", "pool") and source["local_workers"] != "default" \
            and cfg["local_workers"] != 1:
        raise ConfigError(f"--local_workers applies to --command_launcher local or pool, not {launcher}")
    if cfg["local_workers"] < 1:
        raise ConfigError(f"--local_workers must be >= 1, got {cfg['local_workers']}")
    for alg, own in (cfg["algorithm_hparams"] or {}).items():
        if not isinstance(own, dict):
            raise ConfigError(f"--algorithm_hparams maps an algorithm to a JSON object of hparams; "
                              f"{alg} has {own!r}")
        if alg not in cfg["algorithms"]:
            raise ConfigError(f"--algorithm_hparams names {alg}, which is not among the sweep's "
                              f"algorithms ({', '.join(cfg['algorithms'])})")
    for ds in cfg["datasets"]:
        if ds not in catalog.DATASET_ENVIRONMENTS:
            n_environments(ds, cfg["data_dir"])  # unknown name: the registry's error lists the known ones
        bad = [i for i in cfg["test_envs"] or () if not 0 <= i < n_environments(ds, cfg["data_dir"])]
        if bad:
            raise ConfigError(f"--test_envs {bad[0]}: {ds} has domains 0 to "
                              f"{n_environments(ds, cfg['data_dir']) - 1}")


def check_launch(cfg: dict) -> None:
    """Everything a launch can get wrong, before a folder is made or a job submitted."""
    from domainbed_align import hparams_registry
    from domainbed_align.algorithms import get_algorithm_class
    from domainbed_align.datasets import get_dataset_class
    overrides = json.loads(cfg["hparams"]) if cfg["hparams"] else {}
    datasets = {d: get_dataset_class(d) for d in cfg["datasets"]}
    algorithms = {a: get_algorithm_class(a) for a in cfg["algorithms"]}
    for name, ds in datasets.items():
        image_folders = hasattr(ds, "DOMAIN_DIRS")
        if image_folders:
            base = os.path.join(cfg["data_dir"], ds.DIR)
            if not os.path.isdir(base):
                raise ConfigError(f"data folder {base} does not exist; prepare {name} there "
                                  f"(see README, 'Datasets') or point --data_dir at its parent")
        if cfg["mask_dir"] is not None:
            if not image_folders:
                raise ConfigError(f"--mask_dir applies to image-folder datasets; {name} has its "
                                  f"own masks: run it in a sweep without --mask_dir")
            if not os.path.isdir(cfg["mask_dir"]):
                raise ConfigError(f"--mask_dir {cfg['mask_dir']} is not a folder")
        has_masks = ds.HAS_MASKS or cfg["mask_dir"] is not None
        for alg_name, alg in algorithms.items():
            if alg.NEEDS_MASKS and not has_masks:
                raise ConfigError(f"{missing_masks_message(alg_name, name)}, or drop {alg_name}")
            own = (cfg["algorithm_hparams"] or {}).get(alg_name, {})
            for variant in grid_variants(cfg["hparams_grid"]):  # unknown names
                hparams_registry.run_hparams(alg_name, name, 0, 0, {**overrides, **own, **variant})
    launcher = cfg["command_launcher"]
    if launcher == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("--command_launcher slurm but sbatch is not on PATH; run on a SLURM "
                          "login node or use --command_launcher local")
    if launcher == "multi_gpu" and not launchers._visible_gpus():
        raise ConfigError("--command_launcher multi_gpu found no GPU; use local or slurm")
    try:
        os.makedirs(cfg["output_dir"], exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create --output_dir {cfg['output_dir']} ({e.strerror}); "
                          f"pass a folder you can write") from None


def launch_options(cfg: dict) -> launchers.LaunchOptions:
    return launchers.LaunchOptions(
        sweep_dir=cfg["output_dir"], local_workers=cfg["local_workers"],
        **{k: cfg[k] for k in launchers.SLURM_FLAGS if k != "slurm_setup"},
        slurm_setup=tuple(cfg["slurm_setup"] or ()))


# ------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------

def ask_for_confirmation() -> bool:
    try:
        response = input("Are you sure? (y/n) ")
    except EOFError:
        print("\nno answer (stdin closed); pass --skip_confirmation to go on without asking")
        return False
    if response.lower().strip()[:1] != "y":
        print("Nevermind!")
        return False
    return True


def delete(jobs: List[Job]) -> None:
    print("Deleting...")
    for job in jobs:
        shutil.rmtree(job.output_dir)
    print(f"Deleted {len(jobs)} jobs!")


def sweep_lock(output_dir: str) -> FileLock:
    """The sweep folder's lock: one launch or delete at a time (status and collectors read
    freely). Refused at once, with the holder's host, pid and command."""
    return FileLock(os.path.join(output_dir, LOCK_FILE),
                    advice="another launch or delete is working on this sweep (a local launch "
                           "holds it until its jobs end); wait for it, or stop it, and run this "
                           "again; `sweep status` shows progress")


def main(argv: Optional[List[str]] = None) -> int:
    lock = None
    try:
        command, cfg, source = resolve(argv)
        check_config(cfg, source)
        if cfg["config_path"] == QUICK_CONFIG:
            print("(no sweep flags: the quick built-in sweep, sweeps/quick.json)")
        if command == "launch":
            check_launch(cfg)
        jobs = [Job(a, cfg["output_dir"]) for a in make_args_list(cfg)]
        if command != "status" and os.path.isdir(cfg["output_dir"]):
            lock = sweep_lock(cfg["output_dir"]).acquire()  # before reading any state
        update_states(jobs, cfg["output_dir"])
    except DomainBedAlignError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return _run_command(command, cfg, jobs)
    finally:
        if lock is not None:
            lock.release()


def _run_command(command: str, cfg: dict, jobs: List[Job]) -> int:
    if cfg["failed"]:
        for job in jobs:
            if job.state in (FAILED, CORRUPT):
                print(f"{job}\n    {job.detail}")
    else:
        for job in jobs:
            print(job)
    print(summary_line(jobs))

    if command == "launch":
        to_launch = [j for j in jobs if j.state in (NOT_LAUNCHED, FAILED)]
        corrupt = sum(1 for j in jobs if j.state == CORRUPT)
        if corrupt:
            print(f"Leaving {corrupt} corrupt job(s) alone: `sweep status --failed` says what "
                  f"to delete in each.")
        print(f"About to launch {len(to_launch)} jobs.")
        if not to_launch:
            return 0
        if not cfg["skip_confirmation"] and not ask_for_confirmation():
            return 0
        print("Launching...")
        random.Random(cfg["seed"]).shuffle(to_launch)
        if cfg["command_launcher"] != "dummy":  # dummy runs nothing: leave no folders
            for job in to_launch:
                os.makedirs(job.output_dir, exist_ok=True)
                # Pending (not Incomplete) while this launcher lives; the job removes it
                launchers.mark_queued(job.output_dir)
        try:
            launchers.REGISTRY[cfg["command_launcher"]]([j.train_job() for j in to_launch],
                                                        launch_options(cfg))
        except DomainBedAlignError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        finally:  # the launch is over: what it queued has run, failed or is SLURM's now
            for job in to_launch:
                launchers.unmark_queued(job.output_dir)
        print(f"Launched {len(to_launch)} jobs!")
    elif command in ("delete_incomplete", "delete_all"):
        deletable = (INCOMPLETE, FAILED) if command == "delete_incomplete" else \
            (INCOMPLETE, FAILED, DONE, CORRUPT)
        to_delete = [j for j in jobs if j.state in deletable]
        busy = sum(1 for j in jobs if j.state in (RUNNING, PENDING))
        if busy:
            print(f"Leaving {busy} running or pending job(s) alone (scancel them first).")
        print(f"About to delete {len(to_delete)} jobs.")
        if to_delete and (cfg["skip_confirmation"] or ask_for_confirmation()):
            delete(to_delete)
    return 0


if __name__ == "__main__":
    sys.exit(main())
