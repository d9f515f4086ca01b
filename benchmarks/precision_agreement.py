"""Do float32 and bf16 runs agree? Final-checkpoint metrics of runs per (algorithm, precision).

    python benchmarks/precision_agreement.py ROOT

ROOT holds one train.py output folder per run, named `<precision>_<algorithm>_seed<k>`
(benchmarks/gpu_check.sh writes them). For each algorithm and metric: the mean over seeds and
its standard error (sd / sqrt(n)) per precision, the bf16 - fp32 difference, and that
difference in units of its standard error sqrt(se_fp32^2 + se_bf16^2); "agree" when it is at
most 2 (a two-sample z-score: a real difference of one s.e. would rarely show above 2). Also
the mean seconds per training step (data loading included) and its bf16 / fp32 ratio.
Metrics: the test domain's accuracy and explanation metrics (`env{t}_in_*`), and the training
domains' mean validation accuracy. No torch import.
"""
import argparse
import glob
import json
import math
import os
import re
import sys
from collections import defaultdict

METRICS = ("acc", "comp", "suff", "del", "ins")


def final_record(folder: str) -> dict:
    with open(os.path.join(folder, "results.jsonl")) as f:
        lines = [line for line in f if line.strip()]
    return json.loads(lines[-1])


def run_metrics(record: dict) -> dict:
    t = record["args"]["test_envs"][0]
    out = {f"test_{m}": record[f"env{t}_in_{m}"] for m in METRICS if f"env{t}_in_{m}" in record}
    train = sorted({int(k[3:].split("_")[0]) for k in record if re.match(r"env\d+_out_acc$", k)} - {t})
    out["val_acc"] = sum(record[f"env{i}_out_acc"] for i in train) / len(train)
    out["step_s"] = record["step_time"]
    return out


def mean_se(values):
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, sd / math.sqrt(n)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    a = p.parse_args(argv)
    runs = defaultdict(list)  # (algorithm, precision) -> [metrics]
    for folder in sorted(glob.glob(os.path.join(a.root, "*_*_seed*"))):
        m = re.match(r"(fp32|bf16)_(\w+?)_seed\d+$", os.path.basename(folder))
        if m and os.path.exists(os.path.join(folder, "done")):
            runs[m.group(2), m.group(1)].append(run_metrics(final_record(folder)))
    if not runs:
        sys.exit(f"error: no finished <precision>_<algorithm>_seed<k> runs under {a.root}")
    print(f"{'algorithm':<10}{'metric':<11}{'fp32 mean±se':>18}{'bf16 mean±se':>18}{'diff':>9}"
          f"{'diff/se':>9}  verdict")
    all_agree = True
    for alg in sorted({k[0] for k in runs}):
        fp32, bf16 = runs.get((alg, "fp32"), []), runs.get((alg, "bf16"), [])
        if not fp32 or not bf16:
            print(f"{alg:<10}missing runs: fp32 {len(fp32)}, bf16 {len(bf16)}")
            all_agree = False
            continue
        for key in fp32[0]:
            (m0, s0), (m1, s1) = mean_se([r[key] for r in fp32]), mean_se([r[key] for r in bf16])
            if key == "step_s":
                print(f"{alg:<10}{key:<11}{m0:>11.4f}±{s0:<6.4f}{m1:>11.4f}±{s1:<6.4f}"
                      f"{m1 / m0:>9.2f}x{'':>8}  (bf16 / fp32 time per step)")
                continue
            se = math.sqrt(s0 ** 2 + s1 ** 2)
            z = abs(m1 - m0) / se if se > 0 else (0.0 if m1 == m0 else float("inf"))
            agree = z <= 2
            all_agree &= agree
            print(f"{alg:<10}{key:<11}{m0:>11.3f}±{s0:<6.3f}{m1:>11.3f}±{s1:<6.3f}{m1 - m0:>9.3f}"
                  f"{z:>9.2f}  {'agree' if agree else 'DIFFER'}")
    n = {k: len(v) for k, v in runs.items()}
    print(f"\nruns per (algorithm, precision): {n}")
    print("bf16 and fp32 agree on every metric (|diff| <= 2 s.e.):", "yes" if all_agree else "NO")
    return 0


if __name__ == "__main__":
    sys.exit(main())
