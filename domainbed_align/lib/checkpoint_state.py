"""What a checkpoint holds besides weights, in the types a `weights_only` load accepts.

The trainer reads checkpoints with `torch.load(weights_only=True)`, so a tampered file on a
shared disk cannot run code; that loader takes tensors and plain Python types only. Every RNG
state (Python, NumPy, torch, CUDA) is saved and restored in those types, so a resumed run draws
the same numbers as an unbroken one and writes the same records.
"""
import json
import random

import numpy as np
import torch


def rng_state() -> dict:
    """Every RNG state as tensors and plain types, so checkpoints load with weights_only=True."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved; a CUDA state is skipped on a machine without CUDA."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def as_json_types(value):
    """Records and hparams as JSON types only (no numpy scalars): safe for weights_only loads."""
    return json.loads(json.dumps(value))
