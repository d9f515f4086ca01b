"""Time the collector on a synthetic sweep, beside upstream-style pure-Python grouping.

    python benchmarks/collect_speed.py [--records 100000] [--sweep_dir DIR] [--upstream_only]
        [--skip_pure_python]

1. ours: `python -m domainbed_align.collect_results --input_dir DIR --no_write` in a fresh
   process (wall time, imports included);
2. upstream-style: every line through json.loads, records grouped per (trial, dataset,
   algorithm, test env) in Python and each group selected with the Q path of our selection
   methods (DomainBed's algorithm), the three methods; tables not printed.
"""
import argparse
import collections
import json
import os
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
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    if not os.path.isdir(a.sweep_dir) or not os.listdir(a.sweep_dir):
        n = make_sweep(a.sweep_dir, a.records, a.upstream_only)
        print(f"generated {n} records in {a.sweep_dir}")
    for i in range(a.repeats):
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "domainbed_align.collect_results",
                              "--input_dir", a.sweep_dir, "--no_write"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
        tail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""
        print(f"ours (run {i + 1}): {wall:.2f} s wall, exit {res.returncode}; {tail}")
    if not a.skip_pure_python:
        n, t_load, t_select = pure_python(a.sweep_dir)
        print(f"upstream-style pure Python: {n} records, json.loads {t_load:.2f} s + "
              f"grouping/selection {t_select:.2f} s = {t_load + t_select:.2f} s")


if __name__ == "__main__":
    main()
