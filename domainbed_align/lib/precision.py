"""Training precision: float32 (the default) or bfloat16 autocast, the hparam `precision`.

With "bf16" the trainer runs each `update()` under `torch.autocast(dtype=torch.bfloat16)` on CUDA
or CPU: convolutions and matrix products of the networks run in bfloat16, everything else keeps
its type. Parameters, gradients and optimiser state stay float32 (autocast casts a copy of each
weight per op; the gradient flows back into the float32 weight), and the backward pass and the
optimiser step run with autocast switched off (`no_autocast`), as torch's AMP notes advise.
Every tensor that leaves a network for a loss or an explanation (logits, Grad-CAM's activations
and channel weights, ALIGN's mask) is cast to float32 at the network's edge (`Float32Output`,
`grad_cam_parts`), so the loss terms and min-max normalisations compute in float32 on every
device: CPU and CUDA autocast differ in which ops they promote (softmax stays bfloat16 on the
CPU, is float32 on CUDA), and CUDA autocast refuses `binary_cross_entropy`.
Evaluation (accuracy, explanation metrics) runs in float32 whatever the hparam says, so runs of
both precisions are measured with one yardstick. "bf16" also puts ResNet featurizers in
channels-last memory and lets cuDNN pick its fastest kernels (`cudnn.benchmark`); "fp32" keeps
cuDNN deterministic, so a resumed float32 run writes the records of an unbroken one.
"""
import contextlib

import torch
from torch import nn

from domainbed_align.lib.errors import ConfigError

PRECISIONS = ("fp32", "bf16")
DEFAULT = "fp32"


def check(precision: str) -> str:
    """`precision` if it is known, else a ConfigError that lists the known values."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)} "
                          f"(e.g. --hparams '{{\"precision\": \"bf16\"}}')")
    return precision


def of(hparams: dict) -> str:
    """The run's precision; hparams without the key (upstream DomainBed's) mean float32."""
    return check(hparams.get("precision", DEFAULT))


def _device_type(device) -> str:
    return torch.device(device).type


def autocast(precision: str, device):
    """Context for one training update: bfloat16 autocast for "bf16", nothing for "fp32"."""
    if check(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(_device_type(device), dtype=torch.bfloat16)


def no_autocast(device):
    """Autocast off (backward passes, optimiser steps, float32-only ops such as BCE)."""
    return torch.autocast(_device_type(device), enabled=False)


def configure_backends(precision: str, device) -> None:
    """cuDNN: deterministic kernels for float32 (bitwise resume), the fastest for bfloat16
    (shapes are fixed during training: one batch size, one image size). Refuses bfloat16 on a
    GPU without it, with one line."""
    bf16 = check(precision) == "bf16"
    if bf16 and _device_type(device) == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision bf16 needs a GPU with bfloat16 (Ampere or newer); "
                          f"{torch.cuda.get_device_name()} has none: use --hparams "
                          f"'{{\"precision\": \"fp32\"}}'")
    torch.backends.cudnn.deterministic = not bf16
    torch.backends.cudnn.benchmark = bf16


class Float32Output(nn.Module):
    """Last module of an algorithm's network: logits leave autocast as float32 (no parameters,
    so state dicts keep their keys)."""

    def forward(self, x):
        return x.float()
