"""Time the sweep page (`collect_results --html DIR`) beside the text collector on one sweep.

    python benchmarks/report_speed.py [--sweep_dir results/sweeps/digits_main] [--repeats 3]

Each call is a fresh process (imports included; wall time and the child's CPU time) with --no_cache --no_write, so every
results.jsonl is parsed each time and the committed sweep folder is left untouched: the text
report alone, then the text report plus the page (tables, figures, saliency grids, learning
curves, run list). Prints wall time per call and the median of each.
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(argv):
    """(wall s, CPU s of the child, its last stderr line) of one collector call."""
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    res = subprocess.run([sys.executable, "-m", "domainbed_align.collect_results", *argv],
                         capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if res.returncode != 0:
        sys.exit(f"error: collect_results {' '.join(argv)} exited {res.returncode}: "
                 f"{res.stderr.strip().splitlines()[-1:]}")
    return wall, cpu, res.stderr.strip().splitlines()[-1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep_dir", default=os.path.join("results", "sweeps", "digits_main"))
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    base = ["--input_dir", a.sweep_dir, "--no_cache", "--no_write"]
    out = tempfile.mkdtemp(prefix="report_speed_")
    n_runs = sum(os.path.exists(os.path.join(a.sweep_dir, d, "results.jsonl"))
                 for d in os.listdir(a.sweep_dir))
    print(f"sweep {a.sweep_dir}: {n_runs} runs; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start; python "
          f"{sys.version.split()[0]}; wall time of a fresh process per call")
    results = {"text report": [], "text report + --html page": []}
    cpus = {name: [] for name in results}
    try:
        for i in range(a.repeats):
            for name, extra in (("text report", []), ("text report + --html page",
                                                      ["--html", out])):
                shutil.rmtree(out, ignore_errors=True)
                wall, cpu, last = timed(base + extra)
                results[name].append(wall)
                cpus[name].append(cpu)
                print(f"{name} (call {i + 1}): {wall:.2f} s wall, {cpu:.2f} s CPU; {last}")
        page = sorted(os.listdir(out))
        size = sum(os.path.getsize(os.path.join(out, f)) for f in page)
        print(f"page: {len(page)} files, {size / 1e6:.1f} MB: {', '.join(page)}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    for name, walls in results.items():
        print(f"median {name}: {statistics.median(walls):.2f} s wall, "
              f"{statistics.median(cpus[name]):.2f} s CPU")
    extra = [statistics.median(d["text report + --html page"]) - statistics.median(
        d["text report"]) for d in (results, cpus)]
    print(f"the page adds {extra[0]:.2f} s wall, {extra[1]:.2f} s CPU (wall exceeds CPU when "
          "other processes share the cores: see the load average)")


if __name__ == "__main__":
    main()
