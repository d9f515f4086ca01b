"""Write a synthetic sweep folder (results.jsonl + done per run) for collector tests and timing.

    python benchmarks/make_synthetic_sweep.py OUT_DIR [--records 100000] [--upstream_only]

The sweep has DomainBed's job structure (trial_seed -> dataset -> algorithm -> test_envs ->
hparams_seed, test_envs = every [i] and pairs [i, j]) and records shaped like the trainer's:
sorted keys, accuracies that are ratios of small counts (so ties happen, as in real runs) and,
unless --upstream_only, AUC and explanation metrics for every split (mask metrics for ALIGN).
No torch.
"""
import argparse
import hashlib
import itertools
import json
import os

import numpy as np

EXPLANATION = ("comp", "suff", "comp_rand", "suff_rand", "del", "ins", "pg", "pg_cls", "epg", "iou")
DATASETS = {"VLCS": 4, "Debug28": 3}


def test_env_lists(n_envs):
    out = []
    for i in range(n_envs):
        out.append([i])
        out += [[i, j] for j in range(i + 1, n_envs)]
    return out


def run_records(rng, args, n_envs, n_steps, checkpoint_freq, upstream_only, eval_n=64):
    """Records of one run; accuracies are k / eval_n."""
    quality = rng.uniform(0.4, 0.9, size=n_envs)
    hparams = {"batch_size": int(rng.integers(8, 64)), "lr": float(10 ** rng.uniform(-5, -3.5)),
               "resnet_dropout": 0.0, "weight_decay": 0.0}
    recs = []
    steps = list(range(0, n_steps, checkpoint_freq)) + [n_steps - 1]
    for k, step in enumerate(sorted(set(steps))):
        growth = min(1.0, 0.3 + 0.7 * k / max(1, len(steps) - 1))
        rec = {"args": args, "hparams": hparams, "step": step, "epoch": step / 100.0,
               "loss": float(rng.uniform(0.1, 2.0)), "step_time": 0.05, "mem_gb": 1.5}
        for i in range(n_envs):
            for split in ("in", "out"):
                p = min(1.0, quality[i] * growth + rng.normal(0, 0.05))
                rec[f"env{i}_{split}_acc"] = float(rng.binomial(eval_n, max(0.0, p)) / eval_n)
                if upstream_only:
                    continue
                rec[f"env{i}_{split}_auc"] = float(rng.uniform(0.5, 1.0))
                for m in EXPLANATION:
                    rec[f"env{i}_{split}_{m}"] = float(rng.uniform(-0.1, 0.9))
                if args["algorithm"] == "ALIGN":
                    for m in ("mask_epg", "mask_iou", "mask_area"):
                        rec[f"env{i}_{split}_{m}"] = float(rng.uniform(0, 1))
        recs.append(rec)
    return recs


def make_sweep(out_dir, n_records=100_000, upstream_only=False, seed=0,
               algorithms=("ERM", "GRADIA", "RRR", "ALIGN", "MyPlugin"), datasets=None,
               n_trials=3, checkpoint_freq=10, steps_per_run=20, n_hparams=None,
               single_source=False):
    """Write runs until about `n_records` records exist; return the number written.

    With `single_source`, also one single_source run per (trial, dataset, algorithm, source):
    test_envs = every domain but the source."""
    rng = np.random.default_rng(seed)
    datasets = datasets or DATASETS
    jobs = []
    for trial, (ds, n_envs) in itertools.product(range(n_trials), datasets.items()):
        for alg in algorithms:
            for te in test_env_lists(n_envs):
                jobs.append((trial, ds, n_envs, alg, te, "domain_generalization"))
            if single_source:
                for s in range(n_envs):
                    jobs.append((trial, ds, n_envs, alg, [i for i in range(n_envs) if i != s],
                                 "single_source"))
    n_runs_wanted = max(1, n_records // (steps_per_run + 1))
    if n_hparams is None:
        n_hparams = max(1, -(-n_runs_wanted // len(jobs)))
    written = 0
    os.makedirs(out_dir, exist_ok=True)
    for (trial, ds, n_envs, alg, te, task), h in itertools.product(jobs, range(n_hparams)):
        if written >= n_records:
            break
        args = {"algorithm": alg, "checkpoint_freq": checkpoint_freq, "data_dir": "/data",
                "dataset": ds, "holdout_fraction": 0.2, "hparams": None, "hparams_seed": h,
                "output_dir": "", "save_model_every_checkpoint": False, "seed": 0,
                "skip_model_save": True, "steps": steps_per_run * checkpoint_freq,
                "task": task, "test_envs": te, "trial_seed": trial,
                "uda_holdout_fraction": 0}
        name = hashlib.md5(json.dumps(args, sort_keys=True).encode()).hexdigest()
        run_dir = os.path.join(out_dir, name)
        args["output_dir"] = "/sweep/" + name
        recs = run_records(rng, args, n_envs, steps_per_run * checkpoint_freq + 1,
                           checkpoint_freq, upstream_only)
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "results.jsonl"), "w") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in recs)
        with open(os.path.join(run_dir, "done"), "w") as f:
            f.write("done")
        written += len(recs)
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--upstream_only", action="store_true",
                   help="only the keys upstream DomainBed writes")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    n = make_sweep(a.out_dir, a.records, a.upstream_only, a.seed)
    print(f"wrote {n} records to {a.out_dir}")


if __name__ == "__main__":
    main()
