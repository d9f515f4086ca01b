"""Learning curves: a few named runs (`figures curves`), and the selected runs of a sweep
(the HTML page), each line labelled by what it is: algorithm, test domain, differing hparams.

Two quantities per run and step: `train_val`, the mean accuracy of the training domains'
held-out splits (what training-domain validation selects on), and `test`, the test domain's
accuracy (its `in` split, as the tables).
"""
import os
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

import numpy as np

from domainbed_align.lib.errors import ConfigError
from domainbed_align.lib.records import RESULTS_FILE, read_history
from domainbed_align.model_selection import packed_mean
from domainbed_align.report.draw import FONT_PT, PANEL_IN, figure, legend, palette, save_figure
from domainbed_align.report.grid import fmt_value, run_keys, value_key
from domainbed_align.report.names import algorithm_order, environment_names

Curve = List[Tuple[int, float]]


def learning_curve_points(history: Sequence[dict]) -> Dict[str, Curve]:
    """One run's curves {"train_val": [(step, acc)], "test": [(step, acc)]}."""
    args = history[-1]["args"]
    test_envs = list(args["test_envs"])
    n_envs = 1 + max(int(k[3:k.index("_")]) for k in history[-1]
                     if k.startswith("env") and k.endswith("_acc"))
    train = [i for i in range(n_envs) if i not in test_envs]
    out = {"train_val": [], "test": []}
    for r in history:
        out["train_val"].append((int(r["step"]),
                                 float(np.mean([r[f"env{i}_out_acc"] for i in train]))))
        out["test"].append((int(r["step"]), float(r[f"env{test_envs[0]}_in_acc"])))
    return out


def run_labels(records: Sequence[dict], names: Sequence[str]) -> List[str]:
    """A label per run (its last record): "ERM, test 3, batch_size=16": the algorithm, the
    test domain(s), then the hparams and trial seed that differ between runs of that
    algorithm. Runs that would still share a label get their folder name appended."""
    keys = [run_keys(r) or {} for r in records]
    by_alg: Dict[str, List[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        by_alg[k.get("algorithm", names[i])].append(i)
    labels = [""] * len(records)
    for alg, idx in by_alg.items():
        hps = [records[i].get("hparams") or {} for i in idx]
        varying = sorted(n for n in {n for hp in hps for n in hp}
                         if len({value_key(hp.get(n)) for hp in hps}) > 1)
        trials = {keys[i].get("trial_seed") for i in idx}
        for i, hp in zip(idx, hps):
            k = keys[i]
            envs = environment_names(k.get("dataset", ""), 0)
            tests = ", ".join(envs[t] if t < len(envs) else str(t)
                              for t in k.get("test_envs", []))
            labels[i] = f"{alg}, test {tests}" + "".join(
                f", {n}={fmt_value(hp.get(n))}" for n in varying) + \
                (f", trial {k.get('trial_seed')}" if len(trials) > 1 else "")
    shared = {lab for lab in labels if labels.count(lab) > 1}
    return [f"{lab} ({name})" if lab in shared else lab for lab, name in zip(labels, names)]


def learning_curves_figure(input_dir: str, out: str) -> int:
    """Every run folder under `input_dir` as two lines: training-domain validation accuracy
    (solid) and test-domain accuracy (dashed), against the step."""
    if not os.path.isdir(input_dir):
        raise ConfigError(f"--input_dir {input_dir!r} is not a folder; pass a folder of runs")
    names = sorted(d for d in os.listdir(input_dir)
                   if os.path.isfile(os.path.join(input_dir, d, RESULTS_FILE)))
    histories = [read_history(os.path.join(input_dir, n, RESULTS_FILE)) for n in names]
    runs = [(n, h) for n, h in zip(names, histories) if h and run_keys(h[-1]) is not None]
    if not runs:
        raise ConfigError(f"{input_dir} holds no run folder with usable records in "
                          f"{RESULTS_FILE}")
    labels = run_labels([h[-1] for _, h in runs], [n for n, _ in runs])
    order = algorithm_order([run_keys(h[-1])["algorithm"] for _, h in runs])
    ranked = sorted(zip(labels, runs), key=lambda lr: (
        order.index(run_keys(lr[1][1][-1])["algorithm"]), lr[0]))
    # the legend sits beside the panel: widen the figure by its longest entry, not the panel
    longest = max(len(f"{label}: training-domain validation") for label, _ in ranked)
    fig, axes = figure(1, width=PANEL_IN * 1.6 + 0.055 * longest, height=PANEL_IN)
    ax = axes[0]
    colours = palette([lab for lab, _ in ranked])
    for label, (_, history) in ranked:
        pts = learning_curve_points(history)
        for key, style in (("train_val", "-"), ("test", "--")):
            steps, accs = zip(*pts[key])
            what = "training-domain validation" if key == "train_val" else "test domain"
            ax.plot(steps, 100 * np.array(accs), style, color=colours[label], marker=".",
                    label=f"{label}: {what}")
    ax.set_xlabel("step", fontsize=FONT_PT)
    ax.set_ylabel("accuracy (%)", fontsize=FONT_PT)
    ax.tick_params(labelsize=FONT_PT)
    ax.grid(alpha=0.3)
    legend(ax, 2 * len(runs))
    ax.set_title(f"Learning curves ({os.path.basename(os.path.normpath(input_dir))})",
                 fontsize=FONT_PT + 1)
    save_figure(fig, out)
    return len(runs)


def selected_curves(report, method, dataset: str) -> Dict[int, Dict[str, Dict[str, Curve]]]:
    """test env -> algorithm -> {"train_val", "test"}: [(step, mean over trials)] of the runs
    `method` selected, from the checkpoint arrays (no file is read)."""
    ck = report.ckpts
    meta = ck.meta
    run_col, step_col = meta["run"].to_numpy(), meta["step"].to_numpy()
    n_envs_col = meta["n_envs"].to_numpy()
    out: Dict[int, Dict[str, Dict[str, Curve]]] = defaultdict(dict)
    for alg in report.algorithms:
        per_env: Dict[int, Dict[str, Dict[int, list]]] = defaultdict(
            lambda: {"train_val": defaultdict(list), "test": defaultdict(list)})
        for r in report.index[method].get((dataset, alg), []):
            t = int(r["test_env"])
            rows = np.flatnonzero(run_col == run_col[int(r["row"])])
            val = packed_mean(ck.acc_out[rows], n_envs_col[rows], np.full(len(rows), t))
            for s, v, a in zip(step_col[rows], val, ck.acc_in[rows, t]):
                per_env[t]["train_val"][int(s)].append(v)
                per_env[t]["test"][int(s)].append(a)
        for t, curves in per_env.items():
            out[t][alg] = {k: [(s, float(np.nanmean(v))) for s, v in sorted(c.items())]
                           for k, c in curves.items()}
    return dict(sorted(out.items()))


def draw_selected_curves(curves, dataset: str, n_envs: int, method_name: str):
    """One panel per test domain: test-domain accuracy (solid) and training-domain validation
    accuracy (dotted) of each algorithm's selected runs against the step."""
    envs = environment_names(dataset, n_envs)
    fig, axes = figure(len(curves), height=PANEL_IN * 0.85)
    algs = algorithm_order([a for c in curves.values() for a in c])
    colours = palette(algs)
    for ax, (t, lines) in zip(axes, curves.items()):
        for alg in algs:
            if alg not in lines:
                continue
            for key, style in (("test", "-"), ("train_val", ":")):
                steps, accs = zip(*lines[alg][key])
                ax.plot(steps, 100 * np.array(accs), style, color=colours[alg], lw=1.2,
                        label=alg if key == "test" else None)
        ax.set_title(f"{dataset}, test domain {envs[t] if t < len(envs) else t}",
                     fontsize=FONT_PT + 1)
        ax.set_xlabel("step", fontsize=FONT_PT)
        ax.set_ylabel("accuracy (%)", fontsize=FONT_PT)
        ax.tick_params(labelsize=FONT_PT)
        ax.grid(alpha=0.3)
        legend(ax, len(lines))
    fig.suptitle(f"Selected runs ({method_name}), mean over trials: test domain (solid), "
                 "training-domain validation (dotted)", fontsize=FONT_PT + 1)
    return fig
