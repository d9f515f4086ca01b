"""Saliency grids from the runs' explanations.npz (no torch): rows are algorithms (and learned
masks), columns the same images for every row, with colour bars for what the colours mean.

    python -m domainbed_align.figures saliency --input_dir SWEEP --out FILE [--algorithms ...]
"""
import json
import os
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from domainbed_align.lib.errors import ConfigError, DataError
from domainbed_align.lib.records import first_record
from domainbed_align.model_selection import SINGLE_SOURCE
from domainbed_align.report.draw import FONT_PT, save_figure
from domainbed_align.report.grid import warn
from domainbed_align.report.names import algorithm_order, dataset_order

EXPLANATIONS_FILE = "explanations.npz"


def parse_hparam_filters(items: Sequence[str]) -> Dict[str, object]:
    """`NAME=VALUE` strings -> {name: value}; VALUE read as JSON when it is (0.5, false)."""
    out = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--hparam {item!r}: write NAME=VALUE, e.g. digits_cue=patch")
        try:
            out[name] = json.loads(text)
        except json.JSONDecodeError:
            out[name] = text
    return out


def find_explanations(input_dir: str, algorithms: Optional[Sequence[str]] = None,
                      dataset: Optional[str] = None, test_env: Optional[int] = None,
                      trial_seed: Optional[int] = None, hparams_seed: Optional[int] = None,
                      hparams: Optional[Dict[str, object]] = None) -> List[Tuple[str, str]]:
    """[(row label, explanations.npz path)]: one run per (dataset, algorithm), in table order.

    Rows must show the same images, and a run's images are fixed by its test domain and trial
    seed: per dataset, the (test domain, trial seed) that the most algorithms have is used for
    every row (then the one with most hparams_seed 0 runs, then the smallest); an algorithm
    without it is left out with a warning. Among an algorithm's runs there, hparams_seed 0
    wins, then the smallest hparams_seed and folder name. Filters left as None match
    everything; `hparams` keeps runs whose hparams hold these values (one grid variant).
    """
    if not os.path.isdir(input_dir):
        raise ConfigError(f"--input_dir {input_dir!r} is not a folder; pass the sweep's folder")
    found: Dict[tuple, list] = defaultdict(list)
    for name in sorted(os.listdir(input_dir)):
        run_dir = os.path.join(input_dir, name)
        path = os.path.join(run_dir, EXPLANATIONS_FILE)
        if not os.path.isfile(path):
            continue
        rec = first_record(run_dir) or {}
        args = rec.get("args") or {}
        if any((rec.get("hparams") or {}).get(k) != v for k, v in (hparams or {}).items()):
            continue
        if args.get("task") == SINGLE_SOURCE:
            continue
        alg, ds = str(args.get("algorithm", name)), str(args.get("dataset", "?"))
        ts, hs = int(args.get("trial_seed") or 0), int(args.get("hparams_seed") or 0)
        te = (args.get("test_envs") or [None])[0]
        if (algorithms and alg not in algorithms) or (dataset and ds != dataset) or \
                (trial_seed is not None and ts != trial_seed) or \
                (hparams_seed is not None and hs != hparams_seed) or \
                (test_env is not None and te != test_env):
            continue
        found[ds, alg].append(((te if te is not None else -1, ts), (hs != 0, hs, name), path))
    if not found:
        raise DataError(f"no run folder under {input_dir} has {EXPLANATIONS_FILE} matching the "
                        "filters; runs write it at their end (check --algorithms, --dataset, "
                        "--test_env, --trial_seed, --hparams_seed)")
    if algorithms:
        missing = [a for a in algorithms if a not in {alg for _, alg in found}]
        if missing:
            warn(f"warning: saliency: no {EXPLANATIONS_FILE} for {', '.join(missing)}")
    datasets = dataset_order([ds for ds, _ in found])
    algs = list(algorithms) if algorithms else algorithm_order([a for _, a in found])
    out = []
    for ds in datasets:
        here = [alg for alg in algs if (ds, alg) in found]
        key = shared_images_key({alg: found[ds, alg] for alg in here})
        for alg in here:
            runs = sorted(r[1:] for r in found[ds, alg] if r[0] == key)
            if not runs:
                warn(f"warning: saliency: {ds}: no {alg} run on test domain {key[0]} with trial "
                     f"seed {key[1]} (the images of the other rows); {alg} left out")
                continue
            label = alg if len(datasets) == 1 else f"{ds}: {alg}"
            out.append((label, runs[0][1]))
    return out


def shared_images_key(runs: Dict[str, list]) -> tuple:
    """The (test domain, trial seed) most algorithms have; ties: more hparams_seed 0 runs,
    then the smallest. `runs`: algorithm -> [((test_env, trial_seed), (hs != 0, ...), path)]."""
    count: Dict[tuple, list] = defaultdict(lambda: [0, 0])
    for entries in runs.values():
        keys = {e[0] for e in entries}
        default = {e[0] for e in entries if not e[1][0]}
        for k in keys:
            count[k][0] += 1
            count[k][1] += k in default
    return min(count, key=lambda k: (-count[k][0], -count[k][1], k))


def load_explanations(path: str, k: int) -> dict:
    """The first k images of an explanations.npz, ready to display (numpy only)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {name: z[name] for name in z.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}; delete it and rerun the run's last step")
    missing = [n for n in ("x", "y", "pred", "cam") if n not in data]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; it was written by another version")
    x = data["x"][:k].astype(np.float32)
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    hi = x.max(axis=(1, 2, 3), keepdims=True)
    images = ((x - lo) / np.maximum(hi - lo, 1e-8)).transpose(0, 2, 3, 1)
    cam = data["cam"][:k].astype(np.float32)
    cam = cam / np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-8)
    out = {"images": images, "cam": cam, "y": data["y"][:k], "pred": data["pred"][:k],
           "mask": data["mask"][:k, 0].astype(np.float32) if "mask" in data else None,
           "gt": data["gt"][:k, 0] if "gt" in data else None,
           "test_env": int(data["test_env"]) if "test_env" in data else None}
    return out


def saliency_rows(runs: Sequence[Tuple[str, str]], k: int = 6) -> List[Tuple[str, str, dict]]:
    """[(row label, kind, explanations)] with kind "cam", plus a "mask" row after each
    algorithm that learns a mask."""
    rows = []
    for label, path in runs:
        ex = load_explanations(path, k)
        rows.append((label, "cam", ex))
        if ex["mask"] is not None:
            rows.append((f"{label} mask", "mask", ex))
    first: Dict[str, tuple] = {}
    for label, kind, ex in rows:        # same dataset ("ds: alg" labels): same images
        ds = label.split(": ")[0] if ": " in label else ""
        if ds not in first:
            first[ds] = (label, ex["images"])
        elif ex["images"].shape != first[ds][1].shape or \
                not np.array_equal(ex["images"], first[ds][1]):
            warn(f"warning: saliency: row {label!r} shows other images than row "
                 f"{first[ds][0]!r} (runs with different data hparams?); compare with care")
    return rows


def upsample(cam: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a (h0, w0) map to (h, w), pixel centres aligned (as an image
    resampler does), edges clamped."""
    def axis(n_out, n_in):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo
    r0, r1, fr = axis(h, cam.shape[0])
    c0, c1, fc = axis(w, cam.shape[1])
    rows = cam[r0] * (1 - fr)[:, None] + cam[r1] * fr[:, None]
    return rows[:, c0] * (1 - fc)[None, :] + rows[:, c1] * fc[None, :]


def overlay(image: np.ndarray, cam: np.ndarray, cmap, alpha: float = 0.5) -> np.ndarray:
    """The image (H, W, 3) in [0, 1] under its Grad-CAM in `cmap` at `alpha`, blended here in
    numpy: one RGB array per panel draws several times faster than two layered images."""
    h, w = image.shape[:2]
    heat = cmap(np.clip(upsample(cam, h, w), 0, 1))[..., :3]
    return (1 - alpha) * image + alpha * heat


def draw_saliency(rows, title: str = ""):
    """Rows = algorithms (and learned masks), columns = images: the image under its Grad-CAM
    (bilinear, alpha 0.5), the ground-truth mask as a white contour; each panel titled y/pred
    (green right, red wrong)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    jet = colormaps["jet"]
    k = max(len(ex["y"]) for _, _, ex in rows)
    side = 1.3
    fig = Figure(figsize=(side * k + 1.2, side * 1.15 * len(rows) + 0.5), dpi=120,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), k, squeeze=False)
    for r, (label, kind, ex) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(ex["y"]):
                ax.set_axis_off()
                continue
            img = ex["images"][c]
            if kind == "cam":
                ax.imshow(overlay(img, ex["cam"][c], jet), interpolation="nearest")
                if ex["gt"] is not None and ex["gt"][c].max() > 0:
                    ax.contour(ex["gt"][c].astype(float), levels=[0.5], colors="white",
                               linewidths=0.6)
                ok = int(ex["y"][c]) == int(ex["pred"][c])
                ax.set_title(f"{int(ex['y'][c])}/{int(ex['pred'][c])}", fontsize=FONT_PT,
                             color="#1a7f37" if ok else "#cf222e", pad=2)
            else:
                ax.imshow(ex["mask"][c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if c == 0:
                ax.set_ylabel(label, fontsize=FONT_PT)
    _colour_bars(fig, axes, [kind for _, kind, _ in rows])
    fig.suptitle(title or "Grad-CAM on the test domain (title: true/predicted; white: true "
                 "mask)", fontsize=FONT_PT + 1)
    return fig


def _colour_bars(fig, axes, kinds: Sequence[str]):
    """One colour bar per kind of row, beside those rows: what a colour means. Where the kinds
    interleave (several algorithms with masks), each bar spans every row, side by side: a bar
    beside rows 0, 2, 4 and one beside rows 1, 3, 5 would overlap."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    for kind, cmap, label in (("cam", "jet", "Grad-CAM\n(per image, max 1)"),
                              ("mask", "gray", "learned mask")):
        rows = [r for r, k in enumerate(kinds) if k == kind]
        if rows:
            span = rows if rows == list(range(rows[0], rows[-1] + 1)) else range(len(kinds))
            bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap),
                               ax=list(axes[list(span)].ravel()),
                               shrink=0.9, aspect=12 * len(span), pad=0.01)
            bar.set_label(label, fontsize=FONT_PT - 1)
            bar.ax.tick_params(labelsize=FONT_PT - 1)


def saliency_figure(input_dir: str, out: str, algorithms=None, k: int = 6, **filters) -> int:
    """Write the saliency grid of a sweep to `out`; returns the number of rows drawn."""
    rows = saliency_rows(find_explanations(input_dir, algorithms, **filters), k)
    envs = {ex["test_env"] for _, _, ex in rows if ex["test_env"] is not None}
    title = ("Grad-CAM on test domain " + ", ".join(map(str, sorted(envs))) +
             " (title: true/predicted; white contour: true mask)") if envs else ""
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    save_figure(draw_saliency(rows, title), out)
    return len(rows)
