"""Time the collector on a synthetic sweep, beside upstream-style pure-Python grouping.

    python benchmarks/collect_speed.py [--records 100000] [--sweep_dir DIR] [--upstream_only]
        [--skip_pure_python]

1. ours: `python -m domainbed_align.collect_results --input_dir DIR` in a fresh process (wall
   time, imports included): the first call (no cache: every results.jsonl parsed) and the
   repeat calls (the cache `_collect_cache.npz` says nothing changed), side by side;
2. upstream-style: every line through json.loads, records grouped per (trial, dataset,
   algorithm, test env) in Python and each group selected with the Q path of our selection
   methods (DomainBed's algorithm), the three methods; tables not printed.
"""
import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from make_synthetic_sweep import make_sweep  # noqa: E402


def pure_python(sweep_dir):
    from domainbed_align import model_selection as ms
    from domainbed_align.lib.query import Q
    t0 = time.perf_counter()
    records = []
    for name in sorted(os.listdir(sweep_dir)):
        path = os.path.join(sweep_dir, name, "results.jsonl")
        if os.path.exists(path):
            with open(path) as f:
                records.extend(json.loads(line) for line in f if line.strip())
    t1 = time.perf_counter()
    groups = collections.defaultdict(list)
    for r in records:
        for t in r["args"]["test_envs"]:
            a = r["args"]
            groups[(a["trial_seed"], a["dataset"], a["algorithm"], t)].append(r)
    for method in ms.SELECTION_METHODS:
        for recs in groups.values():
            method.sweep_acc(Q(recs))
    return len(records), t1 - t0, time.perf_counter() - t1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--sweep_dir", default="/tmp/domainbed_align_speed_sweep")
    p.add_argument("--upstream_only", action="store_true")
    p.add_argument("--skip_pure_python", action="store_true")
    p.add_argument("--repeats", type=int, default=3, help="calls: the first, then repeats")
    a = p.parse_args(argv)
    if not os.path.isdir(a.sweep_dir) or not os.listdir(a.sweep_dir):
        n = make_sweep(a.sweep_dir, a.records, a.upstream_only)
        print(f"generated {n} records in {a.sweep_dir}")
    cache = os.path.join(a.sweep_dir, "_collect_cache.npz")
    if os.path.exists(cache):
        os.remove(cache)
    walls, cpus = [], []
    for i in range(a.repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "domainbed_align.collect_results",
                              "--input_dir", a.sweep_dir],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        tail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""
        print(f"ours ({'first, no cache' if i == 0 else f'repeat {i}, cached'}): "
              f"{walls[-1]:.2f} s wall, {cpus[-1]:.2f} s CPU, exit {res.returncode}; {tail}")
    # a live sweep: one run's results.jsonl changed since the last call
    runs = sorted(d for d in os.listdir(a.sweep_dir)
                  if os.path.exists(os.path.join(a.sweep_dir, d, "results.jsonl")))
    if runs:
        os.utime(os.path.join(a.sweep_dir, runs[0], "results.jsonl"))
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "domainbed_align.collect_results",
                              "--input_dir", a.sweep_dir],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        print(f"ours (one of {len(runs)} results.jsonl changed): "
              f"{time.perf_counter() - t0:.2f} s wall, exit {res.returncode}")
    if len(walls) > 1:
        print(f"first call {walls[0]:.2f} s wall ({cpus[0]:.2f} s CPU) | repeat call "
              f"{min(walls[1:]):.2f} s wall ({min(cpus[1:]):.2f} s CPU), best of "
              f"{len(walls) - 1} | {walls[0] / min(walls[1:]):.1f}x; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if not a.skip_pure_python:
        n, t_load, t_select = pure_python(a.sweep_dir)
        print(f"upstream-style pure Python: {n} records, json.loads {t_load:.2f} s + "
              f"grouping/selection {t_select:.2f} s = {t_load + t_select:.2f} s")


if __name__ == "__main__":
    main()
