"""Train the tiny real sweep the collector's goldens read: tests/data/tiny_sweep/.

    python tests/make_tiny_sweep.py && python tests/make_golden.py

Debug28 (3 domains), every registered algorithm of ERM/ALIGN, test_envs [i] and pairs [i, j],
trial seeds 0-1, hparams seeds 0-1, 5 steps; plus single_source runs (one per source and trial).
All runs share one process (torch is imported once). Only results.jsonl and done are kept: the
goldens are made from these committed records, never re-trained in the test.
"""
import hashlib
import itertools
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
# Relative to the repository root (the script chdirs there), so the `output_dir` recorded in
# the committed records names no machine's path.
OUT = os.path.join("tests", "data", "tiny_sweep")

from domainbed_align import train  # noqa: E402
from domainbed_align.lib.misc import seed_hash  # noqa: E402


def jobs(algorithms):
    n = 3
    envs = [[i] for i in range(n)] + [[i, j] for i in range(n) for j in range(i + 1, n)]
    envs.sort()
    for trial, alg in itertools.product((0, 1), algorithms):
        for te, h in itertools.product(envs, (0, 1)):
            yield dict(dataset="Debug28", algorithm=alg, test_envs=te, hparams_seed=h,
                       trial_seed=trial, task="domain_generalization")
        for s in range(n):
            yield dict(dataset="Debug28", algorithm=alg, test_envs=[i for i in range(n) if i != s],
                       hparams_seed=0, trial_seed=trial, task="single_source")


def main():
    try:
        from domainbed_align.algorithms import ALGORITHMS
    except ImportError:
        ALGORITHMS = ["ERM"]
    algorithms = [a for a in ("ERM", "ALIGN") if a in ALGORITHMS]
    os.chdir(ROOT)
    shutil.rmtree(OUT, ignore_errors=True)
    t0 = time.time()
    for job in jobs(algorithms):
        seed = seed_hash(job["dataset"], job["algorithm"], job["test_envs"],
                         job["hparams_seed"], job["trial_seed"])
        name = hashlib.md5(json.dumps(job, sort_keys=True).encode()).hexdigest()
        run_dir = os.path.join(OUT, name)
        argv = ["--dataset", job["dataset"], "--algorithm", job["algorithm"],
                "--test_envs", *map(str, job["test_envs"]), "--task", job["task"],
                "--hparams_seed", str(job["hparams_seed"]),
                "--trial_seed", str(job["trial_seed"]), "--seed", str(seed), "--steps", "5",
                "--checkpoint_freq", "2", "--holdout_fraction", "0.2", "--skip_model_save",
                "--output_dir", run_dir]
        rc = train.main(argv)
        assert rc == 0, f"train failed ({rc}) for {argv}"
        for entry in os.listdir(run_dir):
            if entry not in ("results.jsonl", "done"):
                path = os.path.join(run_dir, entry)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    print(f"tiny sweep written to {OUT} in {time.time() - t0:.0f} s", file=sys.__stderr__)


if __name__ == "__main__":
    main()
