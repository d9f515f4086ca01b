"""Featurizers (small CNN for 28x28, torchvision ResNet), classifier heads, and the masker.

Every featurizer exposes `n_outputs` and `cam_layer`, the module whose output Grad-CAM uses.
"""
import os
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from domainbed_align.lib import precision
from domainbed_align.lib.errors import ConfigError


def _conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: no running statistics, so freezing a module is exact.
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
                         nn.GroupNorm(min(8, c_out), c_out), nn.ReLU(inplace=False))


class SmallCNN(nn.Module):
    """Four 3x3 conv blocks, 28 -> 14 -> 14 -> 7 -> 7 px, then global average pooling.

    The last block's 7x7 output is the Grad-CAM layer, like ResNet-50's layer4 at 224 px.
    At width 32 one ERM step (3 domains x 64 images) costs tens of milliseconds on 2 CPU cores;
    DomainBed's 64/128-channel MNIST_CNN costs ~0.7 s there. Striding first keeps the
    memory-bound element-wise work (norm, ReLU) at 14x14, which halves the step time.
    """

    def __init__(self, input_shape: Sequence[int], width: int = 32):
        super().__init__()
        c = input_shape[0]
        self.blocks = nn.Sequential(
            _conv_block(c, width // 2, 2),            # (B, w/2, 14, 14)
            _conv_block(width // 2, width, 1),        # (B, w, 14, 14)
            _conv_block(width, width, 2),             # (B, w, 7, 7)
            _conv_block(width, width, 1),             # (B, w, 7, 7) <- Grad-CAM here
        )
        self.n_outputs = width

    @property
    def cam_layer(self) -> nn.Module:
        return self.blocks[-1]

    def forward(self, x):
        return self.blocks(x).mean(dim=(2, 3))


_RESNET_WEIGHTS = {"resnet18": "ResNet18_Weights", "resnet50": "ResNet50_Weights"}


def _load_imagenet_weights(arch: str):
    """ImageNet V1 weights (classic DomainBed); one clear line if they cannot be had offline."""
    import torchvision
    weights = getattr(torchvision.models, _RESNET_WEIGHTS[arch]).IMAGENET1K_V1
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    if not os.path.exists(path):
        try:
            return weights.get_state_dict(progress=False)
        except Exception as e:  # no network on a compute node, proxy, ...
            raise ConfigError(
                f"ImageNet weights for {arch} are not cached at {path} and could not be "
                f"downloaded ({type(e).__name__}); on a machine with network run "
                f"`python -m domainbed_align.datasets.prepare --weights {arch} --out DIR` "
                f"and copy DIR/{os.path.basename(path)} to {os.path.dirname(path)}/, or pass "
                f"--hparams '{{\"pretrained\": false}}'") from e
    return torch.load(path, map_location="cpu", weights_only=True)


class ResNet(nn.Module):
    """torchvision ResNet-18/50 with frozen BatchNorm statistics (classic DomainBed)."""

    def __init__(self, input_shape: Sequence[int], hparams: dict):
        super().__init__()
        import torchvision
        arch = "resnet18" if hparams["resnet18"] else "resnet50"
        self.network = getattr(torchvision.models, arch)(weights=None)
        if hparams["pretrained"]:
            self.network.load_state_dict(_load_imagenet_weights(arch))
        self.n_outputs = self.network.fc.in_features
        if input_shape[0] != 3:  # DomainBed: adapt the stem to other channel counts
            w = self.network.conv1.weight.data.clone()
            self.network.conv1 = nn.Conv2d(input_shape[0], 64, 7, 2, 3, bias=False)
            for i in range(input_shape[0]):
                self.network.conv1.weight.data[:, i] = w[:, i % 3]
        self.network.fc = nn.Identity()
        self.dropout = nn.Dropout(hparams["resnet_dropout"])
        self.freeze_bn()
        # bf16 runs: NHWC weights and inputs, the layout tensor-core convolutions want
        self.channels_last = precision.of(hparams) == "bf16"
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)

    @property
    def cam_layer(self) -> nn.Module:
        return self.network.layer4

    def forward(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.dropout(self.network(x))

    def train(self, mode: bool = True):
        """BatchNorm stays in eval mode: ImageNet statistics are never updated."""
        super().train(mode)
        self.freeze_bn()
        return self

    def freeze_bn(self):
        for m in self.network.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()


def Featurizer(input_shape: Sequence[int], hparams: dict) -> nn.Module:
    """Small CNN for 28x28 inputs, ResNet otherwise (DomainBed's rule)."""
    if tuple(input_shape[1:3]) == (28, 28):
        return SmallCNN(input_shape, hparams["cnn_width"])
    if tuple(input_shape[1:3]) == (224, 224) or min(input_shape[1:3]) >= 32:
        return ResNet(input_shape, hparams)
    raise ConfigError(f"no featurizer for input shape {tuple(input_shape)}; "
                      f"use 28x28 (small CNN) or >=32 px images (ResNet)")


def Classifier(in_features: int, out_features: int, is_nonlinear: bool = False) -> nn.Module:
    if is_nonlinear:
        return nn.Sequential(nn.Linear(in_features, in_features // 2), nn.ReLU(),
                             nn.Linear(in_features // 2, in_features // 4), nn.ReLU(),
                             nn.Linear(in_features // 4, out_features))
    return nn.Linear(in_features, out_features)


class Masker(nn.Module):
    """ALIGN's lightweight soft masker: a small conv encoder-decoder with a sigmoid output.

    Maps x (B, C, H, W) to a relevance mask (B, 1, H, W) in [0, 1]. A strided stem brings the
    image to half its side (28 px) or a quarter (224 px: 56x56); the mask is predicted there
    and upsampled bilinearly. The decoder adds (not concatenates) the skip connection. This
    keeps the masker at about the small CNN's cost at 28 px and a few percent of a ResNet-50's
    at 224 px.
    """

    def __init__(self, input_shape: Sequence[int], width: int = 16):
        super().__init__()
        c, h = input_shape[0], input_shape[1]
        block = _conv_block  # GroupNorm: without it the sigmoid saturates and the mask collapses
        stem = [block(c, width, 2)]
        if h > 64:
            stem.append(block(width, width, 2))
        self.stem = nn.Sequential(*stem)                       # (B, w, H/2 or H/4, ...)
        self.enc = block(width, width, 1)
        self.down = block(width, 2 * width, 2)                 # (B, 2w, /2)
        self.mid = block(2 * width, 2 * width, 1)
        self.reduce = nn.Conv2d(2 * width, width, 1)
        self.dec = block(width, width, 1)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x):
        size = x.shape[-2:]
        e = self.enc(self.stem(x))
        d = self.reduce(self.mid(self.down(e)))
        d = F.interpolate(d, size=e.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.head(self.dec(d + e))
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return torch.sigmoid(logits)  # (B, 1, H, W)
