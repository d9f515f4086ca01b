"""The requeue / kill soak on the local SLURM, longer than CI's (tests/test_faults_slurm.py).

    bash scripts/slurm_local_cluster.sh            # once, as root
    python benchmarks/requeue_soak.py [--jobs 200] [--steps 8] [--parallelism 6]

A sweep of `--jobs` short Debug28 jobs (one per learning rate) runs on SLURM while a thread
picks a random running job every `--chaos_period_s` and either requeues it (`scontrol
requeue`: a node failure or pre-emption with requeue) or kills it (`scancel --signal=KILL`),
preferring one past its first checkpoint (`hit_mid_run` counts those).
Then `launch` again until every job is Done, and every results.jsonl is compared, timing keys
aside, with an uninterrupted run of the same job in this process. Prints jobs, requeues,
kills, launches, jobs Failed after the chaos, runs that resumed from a checkpoint, duplicate
steps found (must be 0) and records compared; exits 1 if a guarantee broke.
"""
import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "tests"), os.path.join(HERE, "..")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--parallelism", type=int, default=6)
    p.add_argument("--chaos_period_s", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", default=None, help="default: a new temporary folder")
    a = p.parse_args(argv)
    from test_faults_slurm import run_soak  # noqa: E402 (tests/ on the path above)
    out = a.output_dir or os.path.join(tempfile.mkdtemp(prefix="requeue_soak_"), "sw")
    start = time.time()
    try:
        counts = run_soak(out, n_jobs=a.jobs, steps=a.steps, parallelism=a.parallelism,
                          chaos_period_s=a.chaos_period_s, seed=a.seed,
                          log=lambda line: print(line, file=sys.stderr, flush=True))
    except AssertionError as e:
        print(f"error: a guarantee broke: {str(e).splitlines()[0] if str(e) else e!r}",
              file=sys.stderr)
        return 1
    counts["seconds"] = round(time.time() - start)
    for key in ("jobs", "requeues", "kills", "hit_mid_run", "launches", "failed_seen",
                "resumed_runs", "duplicates", "records_compared", "seconds"):
        print(f"{key:17s} {counts[key]}")
    print(f"sweep folder      {out}")
    return 0 if counts["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
