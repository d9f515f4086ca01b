"""Upstream's `sweep launch` with the local launcher, cut down: one subprocess per job,
commands run through a shell as upstream's `local_launcher` does."""
import argparse
import subprocess
import sys

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["launch"])
    parser.add_argument("--algorithms", nargs="+", required=True)
    parser.add_argument("--datasets", nargs="+", required=True)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    for dataset in args.datasets:
        for algorithm in args.algorithms:
            cmd = (f"{sys.executable} -m domainbed.scripts.train --dataset {dataset} "
                   f"--algorithm {algorithm} --steps {args.steps} --test_envs 3 "
                   f"--hparams '{{\"batch_size\": 4}}'")
            subprocess.call(cmd, shell=True)
