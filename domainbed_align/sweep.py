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
(`sweeps/quick.json`) is used. No torch import unless `launch` validates names. The job list
and job states are in `sweep_jobs.py`, the flags and `--config` in `sweep_config.py`.
"""
import json
import os
import random
import shutil
import sys
from typing import List, Optional

from domainbed_align import launchers
from domainbed_align.datasets.masks import missing_masks_message
from domainbed_align.lib.errors import ConfigError, DomainBedAlignError
from domainbed_align.lib.locks import FileLock
# the job list, job states and the definition live one floor down; their names stay here too
from domainbed_align.sweep_config import (DEFAULTS, QUICK_CONFIG, REPO, SWEEPS_DIR,  # noqa: F401
                                          check_config, read_config, resolve)
from domainbed_align.sweep_jobs import (  # noqa: F401
    CORRUPT, DONE, FAILED, INCOMPLETE, NOT_LAUNCHED, PENDING, RUNNING, Job, grid_variants,
    job_dir_name, make_args_list, summary_line, test_env_lists, update_states)

# Held by launch and delete_* for as long as they run (a local launch: until its jobs end)
LOCK_FILE = ".sweep.lock"


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
