"""Explanations of a classifier and how faithful / well-placed they are (method.md sections 1, 4).

`gradcam` gives a batched, optionally differentiable Grad-CAM that training losses reuse (it
returns the logits of its single forward pass); `metrics` scores evaluation saliency maps with
comprehensiveness / sufficiency, deletion / insertion AUC and, given ground-truth masks, the
pointing game, energy pointing game and IoU. Import the submodules directly; this package
imports nothing so that torch-free code can name it.
"""
