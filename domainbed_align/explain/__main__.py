"""Plot what a trained model looks at: `python -m domainbed_align.explain`.

Loads `<run_dir>/model.pkl` (written by `domainbed_align.train` at the end of a run), rebuilds
its dataset and algorithm, and draws n images of one domain with their Grad-CAM, ground-truth
mask (when the dataset has masks) and learned mask (when the algorithm learns one, e.g. ALIGN).

Images come from the run's own split of that domain (DomainBed's `split_indices` with the run's
trial_seed and holdout_fraction); `out` by default, which no run trained on. With --seed 0 the
images are the first n of the same fixed subsample the trainer scores explanations on, so the
figure shows images behind the recorded explanation metrics.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import List, Optional

import numpy as np
import torch

from domainbed_align.lib.errors import ConfigError, DataError, DomainBedAlignError, one_line
from domainbed_align.lib.saved import load_run

EXAMPLE = ("python -m domainbed_align.explain --run_dir RUN --env 3 --n 16 --out gradcam.png")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m domainbed_align.explain",
                                description=__doc__.split("\n")[0], epilog=f"example: {EXAMPLE}")
    p.add_argument("--run_dir", required=True, help="output folder of a finished training run")
    p.add_argument("--env", type=int, required=True, help="domain index (0-based, as --test_envs)")
    p.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--split", choices=("in", "out", "idtest"), default="out",
                   help="the run's split of the domain (default out: never trained on; idtest: "
                        "a training domain's ID test split, for runs with --idtest_fraction)")
    p.add_argument("--seed", type=int, default=0,
                   help="which images; 0: the trainer's explanation subsample")
    p.add_argument("--model", default="model.pkl",
                   help="model file inside run_dir (default model.pkl; or model_step<N>.pkl)")
    p.add_argument("--data_dir", default=None, help="override the run's --data_dir (data moved)")
    p.add_argument("--mask_dir", default=None, help="override the run's --mask_dir")
    p.add_argument("--dpi", type=int, default=120)
    return p


def run_step(run_dir: str, model_name: str, args: dict) -> Optional[int]:
    """Training step of the saved model: from its name, else the run's last record."""
    match = re.fullmatch(r"model_step(\d+)\.pkl", model_name)
    if match:
        return int(match.group(1))
    records_path = os.path.join(run_dir, "results.jsonl")
    if os.path.exists(records_path):
        from domainbed_align.lib.records import read_jsonl
        records, _ = read_jsonl(records_path)
        if records and "step" in records[-1]:
            return int(records[-1]["step"])
    return args["steps"] - 1 if args.get("steps") else None


def choose_images(n_split: int, n: int, trial_seed: int, env: int, split: str, seed: int):
    """Deterministic positions into the split's index list; seed 0 = the trainer's subsample."""
    from domainbed_align.evaluation import explain_subsample
    from domainbed_align.lib.misc import seed_hash
    n = min(n, n_split)
    if seed == 0:
        return explain_subsample(n_split, n, trial_seed, env, split)
    order = np.random.RandomState(seed_hash(trial_seed, env, split, "plot", seed)).permutation(n_split)
    return np.sort(order[:n])


def main(argv: Optional[List[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return _run(a)
    except DomainBedAlignError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2


def _run(a: argparse.Namespace) -> int:
    from domainbed_align.algorithms import get_algorithm_class
    from domainbed_align.datasets import get_dataset_class
    from domainbed_align.explain import plots
    from domainbed_align.datasets.splits import domain_splits

    if a.n < 1:
        raise ConfigError(f"--n must be at least 1, got {a.n}")
    if not a.out.lower().endswith(".png"):
        raise ConfigError(f"--out must name a .png file, got {a.out!r}")
    out_folder = os.path.dirname(os.path.abspath(a.out))
    if not os.path.isdir(out_folder):
        raise ConfigError(f"folder {out_folder} for --out does not exist; create it first")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    saved = load_run(a.run_dir, a.model, device)
    args = saved["args"]
    dataset_cls = get_dataset_class(args["dataset"])
    names = list(dataset_cls.environments(a.data_dir if a.data_dir is not None else args.get("data_dir")))
    if not 0 <= a.env < len(names):
        raise ConfigError(f"--env {a.env} is out of range for {args['dataset']}: "
                          f"give 0..{len(names) - 1} ({', '.join(f'{i}={e}' for i, e in enumerate(names))})")

    hparams = dict(saved["model_hparams"])
    mask_dir = a.mask_dir if a.mask_dir is not None else args.get("mask_dir")
    data_dir = a.data_dir if a.data_dir is not None else args.get("data_dir", "")
    dataset = dataset_cls(data_dir, list(args["test_envs"]), hparams,
                          **({"mask_dir": mask_dir} if mask_dir else {}))
    domain = dataset.datasets[a.env]
    view = domain.eval_view() if hasattr(domain, "eval_view") else domain

    parts = domain_splits(len(domain), a.env, args.get("trial_seed", 0),
                          args.get("holdout_fraction", 0.2), args.get("idtest_fraction", 0.0),
                          args["test_envs"])
    if a.split not in parts:
        raise ConfigError(f"domain {a.env} of this run has no {a.split!r} split (only training "
                          f"domains of runs trained with --idtest_fraction do); use --split out")
    idx = parts[a.split]
    if not idx:
        other = "out" if a.split == "in" else "in"
        raise ConfigError(f"the {a.split!r} split of domain {a.env} is empty (holdout_fraction "
                          f"{args.get('holdout_fraction')}); use --split {other}")
    positions = choose_images(len(idx), a.n, args.get("trial_seed", 0), a.env, a.split, a.seed)
    if a.n > len(idx):
        print(f"note: the {a.split} split of domain {a.env} has {len(idx)} images; showing all",
              file=sys.stderr)
    items = [view[idx[int(p)]] for p in positions]
    x = torch.stack([torch.as_tensor(it[0]) for it in items]).float().to(device)
    y = torch.as_tensor([int(it[1]) for it in items])
    m = (torch.stack([torch.as_tensor(it[2]) for it in items]).float()
         if all(len(it) > 2 for it in items) else None)

    # The state dict overwrites every weight, so never fetch ImageNet weights for a rebuild.
    build_hparams = {**hparams, "pretrained": False} if "pretrained" in hparams else hparams
    algorithm = get_algorithm_class(args["algorithm"])(
        saved.get("model_input_shape", dataset.input_shape),
        saved.get("model_num_classes", dataset.num_classes),
        saved.get("model_num_domains", len(dataset) - len(args["test_envs"])), build_hparams)
    try:
        algorithm.load_state_dict(saved["model_dict"])
    except RuntimeError as e:
        raise DataError(f"{os.path.join(a.run_dir, a.model)} does not match {args['algorithm']} as "
                        f"built now ({str(e).splitlines()[0]}); plot it with the code version "
                        f"that trained it") from e
    algorithm.to(device).eval()

    if hasattr(dataset_cls, "DOMAIN_DIRS"):  # image folders: ImageNet statistics
        from domainbed_align.datasets.image_folder import IMAGENET_MEAN, IMAGENET_STD
        to_display = plots.unnormalize(IMAGENET_MEAN, IMAGENET_STD)
    else:  # in-memory datasets normalise with their own statistics
        to_display = plots.minmax_display
    class_names = getattr(dataset, "classes", None)

    step = run_step(a.run_dir, a.model, args)
    role = "test" if a.env in args["test_envs"] else "train"
    title = (f"{args['algorithm']} on {args['dataset']}, domain {a.env} ({names[a.env]}, {role}), "
             f"{a.split} split, step {step if step is not None else '?'}")
    ex = plots.compute_explanations(algorithm, x, y, m, to_display)
    plots.save_figure(plots.draw_explanations(ex, class_names, title), a.out, dpi=a.dpi)
    right = int((ex.labels == ex.preds).sum())
    print(f"wrote {a.out}: {len(items)} images ({right} correct), panels {', '.join(ex.panels)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
