"""Batched Grad-CAM (Selvaraju et al. ICCV 2017, https://arxiv.org/abs/1610.02391).

Training losses (ALIGN, GRADIA, RES, CARE, DRE, HAICS) need the CAM of the true class to be
differentiable, so the channel weights are taken with `torch.autograd.grad` (never `.backward()`,
which would leak the inner gradients into the parameters' `.grad`) and the same forward pass
also yields the logits for the cross-entropy term.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def grad_cam(model: nn.Module, layer: nn.Module, x: Tensor, target: Tensor | int | None = None,
             create_graph: bool = False, detach_weights: bool = False,
             relu: bool = False) -> tuple[Tensor, Tensor]:
    """Grad-CAM of `target` at the output of `layer`, from one forward pass of `model`.

    cam = sum_k alpha_k A_k with (A, alpha, logits) from `grad_cam_parts`.

    Args:
        detach_weights: detach alpha even when `create_graph` is True; the cam stays
            differentiable through A.
        relu: apply ReLU to the cam (Grad-CAM's positive evidence).
        (the others as in `grad_cam_parts`)

    Returns:
        cam (B, h, w) and logits (B, K). Both carry a graph when gradients are enabled, so a
        caller can add CE on the logits and a CAM loss and back-propagate once.
    """
    A, alpha, logits = grad_cam_parts(model, layer, x, target, create_graph)
    with torch.enable_grad():
        if detach_weights:
            alpha = alpha.detach()
        cam = (alpha * A).sum(dim=1)  # (B, h, w)
        if relu:
            cam = F.relu(cam)
    return cam, logits


def grad_cam_parts(model: nn.Module, layer: nn.Module, x: Tensor,
                   target: Tensor | int | None = None,
                   create_graph: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The pieces of Grad-CAM of `target` at the output of `layer`, from one forward pass.

    alpha_k = mean_{h,w} d(sum_b z[b, target_b]) / dA_k and cam = sum_k alpha_k A_k. Samples do
    not interact (no batch-coupled layers in eval mode), so summing the target logits over the
    batch gives every sample its own gradient in one call.

    Args:
        model: maps x (B, C, H, W) to logits (B, K).
        layer: submodule of `model` whose output A (B, C', h, w) is explained.
        x: input batch; it need not require grad.
        target: class per sample (B,), one int for all, or None for the predicted class.
        create_graph: keep the graph of alpha so a loss on the cam reaches every layer,
            including the ones after `layer` (the head). With False alpha is a constant.

    Returns:
        A (B, C', h, w), alpha (B, C', 1, 1) and logits (B, K), all float32 (also under bf16
        autocast), for callers that need the cam with and without alpha's graph from one
        forward (ALIGN with DRE's L_reg).
    """
    captured: list[Tensor] = []

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor) or output.dim() != 4:
            raise ValueError(f"grad_cam needs a layer whose output is a (B, C, h, w) tensor; "
                             f"{type(module).__name__} gave {type(output).__name__} "
                             f"{tuple(getattr(output, 'shape', ()))}")
        if not output.requires_grad:
            # Frozen model and plain input: make A a leaf so we can still differentiate wrt it.
            output = output.detach().requires_grad_(True)
        captured.append(output)
        # Hand a copy downstream so an in-place op after `layer` (ReLU(inplace=True)) cannot
        # overwrite the A we differentiate against.
        return output.clone()

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x)  # (B, K)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(f"grad_cam expects `layer` to run exactly once per forward; it ran "
                         f"{len(captured)} times (is it a submodule of `model`?)")
    A = captured[0]  # (B, C', h, w)

    B = logits.shape[0]
    if target is None:
        target = logits.detach().argmax(dim=1)
    elif isinstance(target, int):
        target = torch.full((B,), target, dtype=torch.long, device=logits.device)
    target = target.to(device=logits.device, dtype=torch.long)

    with torch.enable_grad():
        score = logits.gather(1, target.view(-1, 1)).sum()
        (dA,) = torch.autograd.grad(score, A, create_graph=create_graph, retain_graph=True)
        # float32 from here on, also when the network ran under bf16 autocast: the channel
        # means, the weighted sum and the callers' min-max need float32's resolution
        # (no copy when A is already float32)
        alpha = dA.float().mean(dim=(2, 3), keepdim=True)  # (B, C', 1, 1)
    return A.float(), alpha, logits.float()


def normalize_cam(cam: Tensor, eps: float = 1e-8, rel_eps: float = 0.0) -> Tensor:
    """Per-sample min-max to [0, 1]; eps keeps a flat map finite (it becomes all zeros).

    For training losses pass `rel_eps` (e.g. 1e-2): the denominator is then at least rel_eps
    times the batch's mean range (detached), so a nearly flat map (range 1e-7, say) is not
    blown up to [0, 1] with 1/range gradients, which makes alignment losses diverge.
    """
    flat = cam.flatten(1)  # (B, h*w)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    span = hi - lo
    if rel_eps > 0:
        span = torch.maximum(span, rel_eps * span.detach().mean())
    return ((flat - lo) / (span + eps)).view_as(cam)


def upsample_cam(cam: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (B, h, w) maps to (B, H, W), align_corners=False as in torchvision."""
    return F.interpolate(cam.unsqueeze(1), size=tuple(size), mode="bilinear",
                         align_corners=False).squeeze(1)


def saliency_map(model: nn.Module, layer: nn.Module, x: Tensor,
                 eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Evaluation saliency (method.md section 4): Grad-CAM of the predicted class, ReLU,
    bilinear to the input size, min-max.

    Returns:
        s (B, H, W) in [0, 1] and logits (B, K), both detached.
    """
    cam, logits = grad_cam(model, layer, x, target=None, create_graph=False, relu=True)
    s = normalize_cam(upsample_cam(cam.detach(), x.shape[-2:]), eps=eps)  # (B, H, W)
    return s, logits.detach()
