"""Run the built-in study's sweeps as ONE job list, in priority order, with one launcher.

    python results/run_study.py [--launcher pool] [--workers 2] [--sweeps NAMES] [--root DIR]

Each sweep is the project's own `sweeps/<name>.json` (what `python -m domainbed_align.sweep
launch --config ...` would run, job folders and identities included); this script only
concatenates their job lists so that the small explanatory sweeps finish before the main
one, and so that a pool of workers (one GPU or a few CPU cores) never drains between sweeps.
Done jobs are skipped; failed and interrupted ones (no live `running` marker) are run again
(the trainer resumes from its checkpoint). `--root` puts every sweep folder under another
directory (a scratch disk); the default is the configs' own `results/sweeps/<name>`.
"""
import argparse
import os
import sys

from domainbed_align import launchers, sweep

PRIORITY = ["digits_cue", "digits_mask_quality", "digits_mask_quality_align", "digits_align_l1",
            "digits_align_l3", "digits_align_warmup_steps", "digits_cue_strength", "digits_main",
            # issue 18: the decisive sweep, then its controls and ablations
            "digits_decisive", "digits_controls_targets", "digits_controls_targets_gradia",
            "digits_controls_graph", "digits_controls_graph_cam", "digits_controls_align_loss",
            "digits_controls_mask_quality", "digits_controls_penalty_everywhere",
            # issue 19: the domain-aware maskers against ALIGN, the deciding cell first
            "digits_beyond_align_patch95", "digits_beyond_align_patch80",
            "digits_beyond_align_background95", "digits_beyond_align_background80"]
SWEEPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "sweeps")


def jobs_of(name: str, root: str = None):
    argv = ["launch", "--config", os.path.join(SWEEPS, name + ".json")]
    if root:
        out = sweep.read_config(os.path.join(SWEEPS, name + ".json"))["output_dir"]
        argv += ["--output_dir", os.path.join(root, os.path.basename(os.path.normpath(out)))]
    _, cfg, source = sweep.resolve(argv)
    sweep.check_config(cfg, source)
    sweep.check_launch(cfg)
    jobs = [sweep.Job(a, cfg["output_dir"]) for a in sweep.make_args_list(cfg)]
    sweep.update_states(jobs, cfg["output_dir"])
    todo = [j for j in jobs if j.state in (sweep.NOT_LAUNCHED, sweep.FAILED, sweep.INCOMPLETE)]
    # leave-one-domain-out before single-source, domain 3 (where the shortcut breaks) first,
    # each held-out domain with all its trials and hparams: a partial run fills whole columns
    todo.sort(key=lambda j: (j.train_args["task"] != "domain_generalization",
                             [3, 0, 1, 2].index(j.train_args["test_envs"][0])
                             if j.train_args["task"] == "domain_generalization" else 0,
                             j.train_args["trial_seed"]))
    return jobs, todo


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--launcher", default="pool", choices=["pool", "local", "dummy"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--sweeps", nargs="+", default=PRIORITY, choices=PRIORITY)
    p.add_argument("--root", help="parent folder of the sweep folders (default: the configs')")
    args = p.parse_args(argv)
    todo = []
    for name in args.sweeps:
        jobs, mine = jobs_of(name, args.root)
        print(f"{name}: {sweep.summary_line(jobs)} -> {len(mine)} to run", flush=True)
        todo += mine
    if args.launcher != "dummy":
        for job in todo:
            os.makedirs(job.output_dir, exist_ok=True)
    launchers.REGISTRY[args.launcher]([j.train_job() for j in todo],
                                      launchers.LaunchOptions(local_workers=args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
