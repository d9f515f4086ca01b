"""Expected GPU hours of a sweep, from a measured step-cost table (benchmarks/step_cost.py).

    python benchmarks/gpu_hours.py --costs results/benchmarks/step_cost_h200.txt \
        --config sweeps/vlcs_paper.json [--config sweeps/terra_paper.json] \
        [--costs results/benchmarks/step_cost_h200_bf16.txt]

With several --costs (float32 and bf16 tables, say), one table per file and a last line per
file with its total and its share of the first file's.

For each job of the sweep (its own job list, via the sweep command's code) the training time is
steps x the measured ms per update of its algorithm on ResNet-50, scaled linearly by the number
of training domains (the table is measured with 3 domains x 32 images; a job with 2 training
domains draws 2 x 32). Counts training updates only: the explanation metrics at each checkpoint,
evaluation and data loading come on top (measure them with benchmarks/explain_overhead.py).
No torch import: runs anywhere.
"""
import argparse
import re
import sys
from collections import defaultdict

from domainbed_align import catalog, sweep

DEFAULT_STEPS = 5001         # DomainBed's (and our image datasets') N_STEPS
MEASURED_DOMAINS = 3


def resnet_costs(path: str) -> dict:
    """algorithm -> ms per update, from the 'ResNet-50' block of a step_cost.py output."""
    costs, inside = {}, False
    with open(path) as f:
        for line in f:
            if line.startswith("ResNet-50"):
                inside = True
                continue
            if inside:
                m = re.match(r"^(\w+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+", line)
                if m and m.group(1) != "algorithm":
                    costs[m.group(1)] = float(m.group(2))
                elif not line.strip():
                    break
    if not costs:
        sys.exit(f"error: {path} has no 'ResNet-50' table; run benchmarks/step_cost.py --resnet")
    return costs


def sweep_hours(config: str, costs: dict) -> dict:
    """(dataset, algorithm, task) -> (jobs, GPU hours)."""
    _, cfg, _ = sweep.resolve(["status", "--config", config])
    out = defaultdict(lambda: [0, 0.0])
    missing = sorted(set(cfg["algorithms"]) - set(costs))
    if missing:
        sys.exit(f"error: the step-cost table has no {', '.join(missing)}; run "
                 f"benchmarks/step_cost.py --resnet with every algorithm of {config}")
    for args in sweep.make_args_list(cfg):
        n_envs = len(catalog.DATASET_ENVIRONMENTS[args["dataset"]])
        n_train = n_envs - len(args["test_envs"])
        ms = costs[args["algorithm"]] * n_train / MEASURED_DOMAINS
        steps = args.get("steps") or DEFAULT_STEPS
        key = (args["dataset"], args["algorithm"], args["task"])
        out[key][0] += 1
        out[key][1] += steps * ms / 1000 / 3600
    return out


def report(costs_path: str, configs) -> float:
    """Print the tables of one step-cost file; returns the GPU hours of all sweeps."""
    costs = resnet_costs(costs_path)
    print(f"step costs (ms per update, ResNet-50, 3 x 32 images): {costs_path}")
    grand = 0.0
    for config in configs:
        rows = sweep_hours(config, costs)
        print(f"\n{config}")
        print(f"{'dataset':<16}{'algorithm':<10}{'task':<24}{'jobs':>6}{'GPU h':>9}")
        total = 0.0
        for (ds, alg, task), (n, h) in rows.items():
            print(f"{ds:<16}{alg:<10}{task:<24}{n:>6}{h:>9.1f}")
            total += h
        print(f"{'total':<50}{sum(n for n, _ in rows.values()):>6}{total:>9.1f}")
        grand += total
    print(f"\nall sweeps: {grand:.0f} GPU hours of training updates")
    return grand


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--costs", action="append", required=True)
    p.add_argument("--config", action="append", required=True)
    a = p.parse_args(argv)
    totals = [report(path, a.config) for path in a.costs]
    if len(totals) > 1:
        print()
        for path, total in zip(a.costs, totals):
            print(f"{path}: {total:.0f} GPU hours, {total / totals[0]:.0%} of {a.costs[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
