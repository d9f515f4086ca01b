"""What a checkpoint measures on each split: accuracy, prediction AUC, explanation quality.

Every split is evaluated without augmentation. Explanation metrics use a fixed subsample of
`explain_n` images per split (the same images at every checkpoint and for every algorithm of a
trial), against ground-truth masks where the dataset has them; the hparams `explain_grid_points`
and `pg_tolerance_px224` set the RISE grid and the pointing-game tolerance.
"""
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from domainbed_align.datasets.loaders import eval_batches
from domainbed_align.lib.errors import TrainingError
from domainbed_align.lib.misc import seed_hash

EVAL_BATCH_SIZE = 256


def explain_subsample(n: int, explain_n: int, trial_seed: int, env: int, split: str) -> np.ndarray:
    """Fixed positions (into the split's index list) of the images explained at each checkpoint."""
    order = np.random.RandomState(seed_hash(trial_seed, env, split, "explain")).permutation(n)
    return np.sort(order[:explain_n])


@torch.no_grad()
def _predict_split(algorithm, dataset, indices, device, num_workers):
    probs, labels = [], []
    for batch in eval_batches(dataset, indices, EVAL_BATCH_SIZE, num_workers):
        x, y = batch[0].to(device), batch[1]
        probs.append(torch.softmax(algorithm.predict(x), dim=1).cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(probs), torch.cat(labels)


def _gather(dataset, indices, device, num_workers):
    """The items `indices` as stacked tensors (x, y, m or None) on `device`."""
    parts = list(eval_batches(dataset, indices, EVAL_BATCH_SIZE, num_workers))
    x = torch.cat([p[0] for p in parts]).to(device)
    y = torch.cat([torch.as_tensor(p[1]) for p in parts]).to(device)
    m = torch.cat([p[2] for p in parts]).to(device) if len(parts[0]) > 2 else None
    return x, y, m


def _densities(algorithm, x, m, cue_region) -> Dict[str, float]:
    from domainbed_align.explain.metrics import _raw_saliency, region_densities
    cue = torch.from_numpy(np.asarray(cue_region)) if cue_region is not None else None
    cam, _ = _raw_saliency(algorithm.network, algorithm.cam_layer, x)
    out = {f"cam_density_{k}": v for k, v in region_densities(cam, m, cue).items()}
    with torch.no_grad():
        mask = algorithm.learned_mask(x)
    if mask is not None:
        out.update({f"mask_density_{k}": v for k, v in region_densities(mask, m, cue).items()})
    return out


SNAPSHOT_N = 8


def explanation_snapshot(algorithm, dataset, indices: Sequence[int], device) -> Dict[str, np.ndarray]:
    """A few images with their prediction, ReLU'd Grad-CAM (CAM-layer resolution), learned
    mask and ground truth: what a saliency figure needs, small enough to commit (~30 KB)."""
    from domainbed_align.explain.gradcam import grad_cam
    x, y, m = _gather(dataset, np.asarray(indices)[:SNAPSHOT_N], device, 0)
    was_training = algorithm.training
    algorithm.eval()
    try:
        cam, logits = grad_cam(algorithm.network, algorithm.cam_layer, x, relu=True)
        with torch.no_grad():
            mask = algorithm.learned_mask(x)
    finally:
        algorithm.train(was_training)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    span = (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp(min=1e-8)
    display = ((x - lo) / span * 255).round().to(torch.uint8)  # per-image min-max, for figures
    out = {"x": display.cpu().numpy(), "y": y.cpu().numpy(),
           "pred": logits.argmax(1).cpu().numpy(), "cam": cam.detach().cpu().numpy().astype(np.float32)}
    if mask is not None:
        out["mask"] = mask.cpu().numpy().astype(np.float16)
    if m is not None:
        out["gt"] = (m.cpu().numpy() >= 0.5).astype(np.uint8)
    return out


def evaluate_split(algorithm, dataset, indices: Sequence[int], explain_positions: Optional[np.ndarray],
                   num_classes: int, device, num_workers: int = 0,
                   cue_region: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Metrics of one split, keyed without the `env{i}_{in,out}_` prefix.

    With ground-truth masks, also where the Grad-CAM (`cam_density_*`) and a learned mask
    (`mask_density_*`) put their mass: strokes, the dataset's `cue_region`, background."""
    from domainbed_align.explain.metrics import explanation_metrics, metric_grid, prediction_auc
    if len(indices) == 0:  # e.g. holdout_fraction * n < 1: an empty `out` split has no score
        return {"acc": float("nan"), "auc": float("nan")}
    was_training = algorithm.training
    algorithm.eval()
    try:
        probs, labels = _predict_split(algorithm, dataset, indices, device, num_workers)
        if not torch.isfinite(probs).all():
            raise TrainingError("the model outputs NaN/inf (its weights diverged); lower the "
                                "learning rate (--hparams '{\"lr\": ...}'); earlier records are kept")
        out = {"acc": float((probs.argmax(1) == labels).float().mean()) if len(labels) else float("nan"),
               "auc": float(prediction_auc(probs.numpy(), labels.numpy(), num_classes))}
        if explain_positions is not None and len(explain_positions):
            x, y, m = _gather(dataset, np.asarray(indices)[explain_positions], device, num_workers)
            hp = algorithm.hparams
            out.update(explanation_metrics(algorithm.network, algorithm.cam_layer, x, y, masks=m,
                                           fractions=metric_grid(hp["explain_grid_points"]),
                                           pg_tolerance_px224=hp["pg_tolerance_px224"]))
            out.update(algorithm.explanation_extras(x, y, m))
            if m is not None:
                out.update(_densities(algorithm, x, m, cue_region))
    finally:
        algorithm.train(was_training)
    return out
