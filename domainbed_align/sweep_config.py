"""A sweep's definition: DomainBed's flags, a `--config` file, and the checks on both.

Values come from three places, defaults < `--config FILE` < flags, and `resolve` remembers
which place gave each one, so a check can tell a SLURM flag the user gave beside the local
launcher from one a sweep file carries. The file goes through the same parser as the command
line, so both accept and refuse the same values. Apart so that `sweep.py` holds the commands.
"""
import argparse
import json
import os
from typing import List, Optional, Tuple

from domainbed_align import catalog, launchers
from domainbed_align.lib.errors import ConfigError
from domainbed_align.sweep_jobs import n_environments

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
