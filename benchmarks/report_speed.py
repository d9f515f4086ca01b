"""Time the sweep page (`collect_results --html DIR`) beside the text collector on one sweep.

    python benchmarks/report_speed.py [--sweep_dir results/sweeps/digits_main] [--repeats 3]

Each call is a fresh process (imports included) with --no_cache --no_write, so every
results.jsonl is parsed each time and the committed sweep folder is left untouched: the text
report alone, then the text report plus the page (tables, figures, saliency grids, learning
curves, run list). Prints wall time per call and the median of each.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(argv):
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "domainbed_align.collect_results", *argv],
                         capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"error: collect_results {' '.join(argv)} exited {res.returncode}: "
                 f"{res.stderr.strip().splitlines()[-1:]}")
    return wall, res.stderr.strip().splitlines()[-1]


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
    try:
        for i in range(a.repeats):
            wall, last = timed(base)
            results["text report"].append(wall)
            print(f"text report (call {i + 1}): {wall:.2f} s; {last}")
            shutil.rmtree(out, ignore_errors=True)
            wall, last = timed(base + ["--html", out])
            results["text report + --html page"].append(wall)
            print(f"text report + --html page (call {i + 1}): {wall:.2f} s; {last}")
        page = sorted(os.listdir(out))
        size = sum(os.path.getsize(os.path.join(out, f)) for f in page)
        print(f"page: {len(page)} files, {size / 1e6:.1f} MB: {', '.join(page)}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    for name, walls in results.items():
        print(f"median {name}: {statistics.median(walls):.2f} s")
    extra = statistics.median(results["text report + --html page"]) - \
        statistics.median(results["text report"])
    print(f"the page adds {extra:.2f} s")


if __name__ == "__main__":
    main()
