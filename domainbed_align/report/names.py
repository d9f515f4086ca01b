"""Names and orders shared by every table and figure: metrics with their direction, dataset
order and column names, algorithm order. Pure data and small functions."""
from typing import List, Optional, Sequence

import numpy as np

from domainbed_align import catalog
from domainbed_align.lib.errors import ConfigError

# Metric suffix -> (description, direction): +1 higher is better, -1 lower, 0 control/neutral.
METRICS = {
    "acc": ("accuracy", +1),
    "auc": ("prediction ROC-AUC", +1),
    "comp": ("comprehensiveness AOPC", +1),
    "suff": ("sufficiency AOPC", -1),
    "comp_rand": ("comprehensiveness, random saliency (control)", 0),
    "suff_rand": ("sufficiency, random saliency (control)", 0),
    "del": ("deletion AUC", -1),
    "ins": ("insertion AUC", +1),
    "pg": ("pointing game", +1),
    "pg_cls": ("pointing game, mean over classes", +1),
    "epg": ("energy pointing game", +1),
    "iou": ("IoU of top saliency with the mask", +1),
    "mask_epg": ("learned mask energy pointing game", +1),
    "mask_iou": ("learned mask IoU", +1),
    "mask_area": ("learned mask area", 0),
    # where the mass sits, relative to each region's area (1 = uniform): on the ground-truth
    # evidence (higher is better) and on a dataset's known shortcut (SpuriousDigits' cue)
    "cam_density_strokes": ("Grad-CAM density on the evidence", +1),
    "cam_density_cue": ("Grad-CAM density on the shortcut", -1),
    "mask_density_strokes": ("learned mask density on the evidence", +1),
    "mask_density_cue": ("learned mask density on the shortcut", -1),
}
ARROWS = {+1: "↑", -1: "↓", 0: "·"}

# Upstream DomainBed datasets a sweep may hold (their table order and column names), so that an
# upstream sweep lays out exactly as upstream does even for datasets we do not ship.
UPSTREAM_DATASET_ENVIRONMENTS = {
    "Debug28": ("0", "1", "2"),
    "Debug224": ("0", "1", "2"),
    "ColoredMNIST": ("+90%", "+80%", "-90%"),
    "RotatedMNIST": ("0", "15", "30", "45", "60", "75"),
    "VLCS": ("C", "L", "S", "V"),
    "PACS": ("A", "C", "P", "S"),
    "OfficeHome": ("A", "C", "P", "R"),
    "TerraIncognita": ("L100", "L38", "L43", "L46"),
    "DomainNet": ("clip", "info", "paint", "quick", "real", "sketch"),
    "SVIRO": ("aclass", "escape", "hilux", "i3", "lexus", "tesla", "tiguan", "tucson", "x5",
              "zoe"),
    "WILDSCamelyon": ("hospital_0", "hospital_1", "hospital_2", "hospital_3", "hospital_4"),
    "WILDSFMoW": ("region_0", "region_1", "region_2", "region_3", "region_4", "region_5"),
}


def algorithm_order(names_in_order: Sequence[str]) -> List[str]:
    """Our ALGORITHMS first, in their order (a `--split_by` variant `ALG[k=v]` with its base
    algorithm, variants sorted); unknown ones after, in order of appearance."""
    seen = list(dict.fromkeys(names_in_order))
    order = catalog.ALGORITHM_ORDER
    known = sorted((a for a in seen if base_algorithm(a) in order),
                   key=lambda a: (order.index(base_algorithm(a)), a))
    return known + [a for a in seen if base_algorithm(a) not in order]


def base_algorithm(label: str) -> str:
    """`RES[res_target_rescale=false]` -> `RES` (a `--split_by` label's algorithm)."""
    return label.split("[", 1)[0]


def known_datasets() -> List[str]:
    """Upstream's datasets in its order, ours each placed after its predecessor."""
    order = list(UPSTREAM_DATASET_ENVIRONMENTS)
    prev = None
    for name in catalog.DATASET_ENVIRONMENTS:
        if name not in order:
            order.insert(order.index(prev) + 1 if prev in order else len(order), name)
        prev = name
    return order


def dataset_order(names: Sequence[str]) -> List[str]:
    """Known datasets in DomainBed's order, then the others sorted; none is dropped."""
    names = set(names)
    known = known_datasets()
    return [d for d in known if d in names] + sorted(n for n in names if n not in known)


def environment_names(dataset: str, n_envs: int, sweep=None) -> List[str]:
    """Column names: the catalog's, upstream's, else those the runs recorded (`domain_names`,
    written by our trainer: DomainFolder's come from the data folder; `sweep` is a
    `records.Sweep`), else env0, env1, ..."""
    envs = catalog.DATASET_ENVIRONMENTS.get(dataset) or \
        UPSTREAM_DATASET_ENVIRONMENTS.get(dataset)
    if envs is None and sweep is not None:
        rows = np.flatnonzero(sweep.ckpts.meta["dataset"].to_numpy() == dataset)[:1]
        names = next(iter(sweep.records_at(rows).values()), {}).get("domain_names")
        if isinstance(names, list) and len(names) == n_envs and \
                all(isinstance(n, str) for n in names):
            envs = names
    if envs is not None:
        return list(envs)
    return [f"env{i}" for i in range(n_envs)]


def parse_metrics(names: Optional[Sequence[str]]) -> Optional[List[str]]:
    """`--metrics` values (space or comma separated) -> metric names; unknown: one error."""
    if not names:
        return None
    out = []
    for name in (n.strip() for part in names for n in part.split(",")):
        if not name:
            continue
        if name not in METRICS:
            raise ConfigError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
        out.append(name)
    return out


def metric_label(metric: str) -> str:
    """Axis label of a test-domain metric, with its unit and its direction."""
    name, direction = METRICS.get(metric, (metric, 0))
    unit = "%" if metric == "acc" else "x100"
    better = {+1: ", higher is better", -1: ", lower is better", 0: ""}[direction]
    return f"test-domain {name} ({unit}{better})"
