"""Tables (and a figure) from the run folders made by results/*.sh.

  python results/summarise_runs.py search RUNS [ERM_RUN] ALIGN schedule search (one seed)
  python results/summarise_runs.py compare RUNS [PNG]   ERM / DRE / ALIGN, seeds, both variants

"train out" is the mean of the training domains' held-out (`out`) accuracies, the quantity
DomainBed's training-domain validation selects on; "env3" is the test domain's `in` split.
"""
import json
import math
import os
import sys

TRAIN_ENVS, TEST_ENV = (0, 1, 2), 3
TRACE_WINDOW = 300  # steps after the end of the classifier warm-up: to the end of a 600-step run


def records(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, "results.jsonl"))]


def train_out(r):
    return sum(r[f"env{i}_out_acc"] for i in TRAIN_ENVS) / len(TRAIN_ENVS)


def schedule(r):
    """(classifier warm-up end, alignment start, full weight) in steps, or None (not ALIGN)."""
    hp = r["hparams"]
    if "align_warmup_steps" not in hp:
        return None
    w = hp["align_warmup_steps"]
    return w, w + hp["align_masker_warmup_steps"], w + hp["align_masker_warmup_steps"] + hp["align_l3_ramp_steps"]


def switch_stats(recs):
    """Train-out accuracy at the last record of the classifier warm-up, and the lowest one in
    the TRACE_WINDOW steps after it: (step, ref, min step, min, drop = ref - min)."""
    w = schedule(recs[-1])[0]
    before = [r for r in recs if r["step"] <= w - 1]
    ref = before[-1]
    after = [r for r in recs if w - 1 < r["step"] <= w - 1 + TRACE_WINDOW] or [ref]
    low = min(after, key=train_out)
    return ref["step"], train_out(ref), low["step"], train_out(low), train_out(ref) - train_out(low)


def search(root, erm_run=None):
    """One row per finished run under `root` (plus an ERM run with the same settings)."""
    print("ALIGN schedule search: SpuriousDigits (spurious), test env 3, seed 0, 600 steps,")
    print("classifier warm-up W = 300 steps. train out = mean held-out acc of envs 0-2; warm-up end =")
    print(f"the last record before step W; lowest = the lowest record in the {TRACE_WINDOW} steps after it.\n")
    print(f"{'run':<18}{'l3':>5}{'Wm':>5}{'ramp':>5}{'pool':>6}{'warm-up end':>12}{'lowest':>8}"
          f"{'drop':>7}{'final train out':>16}{'final env3':>11}")
    names = sorted(n for n in os.listdir(root) if os.path.exists(os.path.join(root, n, "done"))
                   and os.path.exists(os.path.join(root, n, "results.jsonl")))
    dirs = [os.path.join(root, n) for n in names] + ([erm_run] if erm_run else [])
    for run_dir in dirs:
        recs = records(run_dir)
        last, name = recs[-1], os.path.basename(run_dir)
        if schedule(last) is None:
            print(f"{name:<18}{'-':>5}{'-':>5}{'-':>5}{'-':>6}{'':>12}{'':>8}{'':>7}"
                  f"{train_out(last):>16.3f}{last[f'env{TEST_ENV}_in_acc']:>11.3f}")
            continue
        hp = last["hparams"]
        _, ref, _, low, drop = switch_stats(recs)
        print(f"{name:<18}{hp['align_l3']:>5g}{hp['align_masker_warmup_steps']:>5}"
              f"{hp['align_l3_ramp_steps']:>5}{hp['align_target_pool']:>6}{ref:>12.3f}{low:>8.3f}"
              f"{drop:>7.3f}{train_out(last):>16.3f}{last[f'env{TEST_ENV}_in_acc']:>11.3f}")


def mean_se(values):
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, float("nan")
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values))


def compare(root, png=None):
    """Runs named <algorithm>_<variant>_s<seed>; the last record of each."""
    runs = {}
    for name in sorted(os.listdir(root)):
        if not os.path.exists(os.path.join(root, name, "done")):
            continue
        alg, variant, seed = name.rsplit("_", 2)
        runs.setdefault((variant, alg), []).append((seed, records(os.path.join(root, name))))
    steps = {recs[-1]["step"] + 1 for rs in runs.values() for _, recs in rs}
    print(f"SpuriousDigits, test env {TEST_ENV}, {', '.join(map(str, sorted(steps)))} steps for every "
          f"algorithm, default hparams unless noted; mean +- standard error over seeds (n).")
    print("Columns env0-2: held-out (out) accuracy of the training domains; env3: the test "
          "domain's in split.\n")
    cols = [f"env{i} out" for i in TRAIN_ENVS] + [f"env{TEST_ENV} (test)"]
    print(f"{'variant':<10}{'algorithm':<10}{'n':>3}" + "".join(f"{c:>16}" for c in cols))
    for variant in ("spurious", "clean"):
        for alg in ("ERM", "DRE", "ALIGN"):
            rs = runs.get((variant, alg))
            if not rs:
                continue
            lasts = [recs[-1] for _, recs in rs]
            keys = [f"env{i}_out_acc" for i in TRAIN_ENVS] + [f"env{TEST_ENV}_in_acc"]
            cells = []
            for k in keys:
                m, se = mean_se([r[k] for r in lasts])
                cells.append(f"{m:.3f} +- {se:.3f}")
            print(f"{variant:<10}{alg:<10}{len(lasts):>3}" + "".join(f"{c:>16}" for c in cells))
    print(f"\nPer seed, env{TEST_ENV} (test) accuracy:")
    for variant in ("spurious", "clean"):
        for alg in ("ERM", "DRE", "ALIGN"):
            rs = runs.get((variant, alg), [])
            if rs:
                print(f"  {variant:<10}{alg:<7}" + "  ".join(
                    f"{seed} {recs[-1][f'env{TEST_ENV}_in_acc']:.3f}" for seed, recs in rs))
    print(f"\nALIGN around the switch: train out (mean of env0-2 out) per record; W = end of the "
          f"classifier warm-up,\nthen masker alone, then alignment weight ramping to l3. "
          f"Lowest = lowest record in the {TRACE_WINDOW} steps after W.")
    for variant in ("spurious", "clean"):
        for seed, recs in runs.get((variant, "ALIGN"), []):
            w, a, full = schedule(recs[-1])
            ref_step, ref, low_step, low, drop = switch_stats(recs)
            trace = " ".join(f"{r['step']}:{train_out(r):.3f}" for r in recs
                             if w - 1 - 50 <= r["step"] <= w - 1 + TRACE_WINDOW)
            print(f"{variant} {seed}: W={w} align from {a} full at {full}; end of warm-up (step {ref_step}) {ref:.3f}, lowest "
                  f"{low:.3f} (step {low_step}), drop {drop:+.3f}\n  {trace}")
    if png:
        plot(runs, png)


def plot(runs, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    colours = {"ERM": "tab:grey", "DRE": "tab:blue", "ALIGN": "tab:red"}
    for ax, variant in zip(axes, ("spurious", "clean")):
        for alg in ("ERM", "DRE", "ALIGN"):
            for k, (seed, recs) in enumerate(runs.get((variant, alg), [])):
                ax.plot([r["step"] for r in recs], [train_out(r) for r in recs], color=colours[alg],
                        lw=1, alpha=0.8, label=alg if k == 0 else None)
                ax.plot([r["step"] for r in recs], [r[f"env{TEST_ENV}_in_acc"] for r in recs],
                        color=colours[alg], lw=1, ls=":", alpha=0.8)
        sched = [schedule(recs[-1]) for _, recs in runs.get((variant, "ALIGN"), [])]
        for x, txt in zip(sched[0] if sched else (), ("W", "align on", "full l3")):
            ax.axvline(x, color="k", lw=0.6, ls="--")
            ax.text(x, 0.02, txt, rotation=90, fontsize=7, va="bottom")
        ax.set_title(f"SpuriousDigits ({variant}), solid: train out, dotted: env3")
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


if __name__ == "__main__":
    {"search": search, "compare": compare}[sys.argv[1]](*sys.argv[2:])
