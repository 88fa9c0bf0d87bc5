"""Explanations: heatmaps for a model's answer (`vtool explain`) and explanation parity (`vtool parity --explain`):
does an optimized model (INT8, export) still look at the same pixels as the original?

    methods.py   Grad-CAM / Grad-CAM++ (grad-cam package, torch models) and occlusion (any Runner)
    core.py      ExplainConfig -> explain(model, images) -> ExplainResult, PNG overlays with the top-k labels
    agree.py     heatmap agreement (Spearman rank correlation, top-region IoU) and explanation_parity()
    figures.py   overlays and the worst pairs side by side (matplotlib)
"""

from __future__ import annotations

from toolchain.explain.agree import ExplanationParity, explanation_parity, heatmap_agreement
from toolchain.explain.core import ExplainConfig, ExplainResult, explain
from toolchain.explain.methods import METHODS, find_target_layer

CAVEAT = (
    "Heatmaps are evidence, not proof. Grad-CAM can look plausible even for a model with randomized weights "
    "(Adebayo et al., 2018, 'Sanity Checks for Saliency Maps'), it is only as sharp as the layer it reads "
    "(a 32x32 input read at an 8x8 feature map gives 4-pixel blocks), and occlusion depends on the window size "
    "and the grey fill it uses. Explanation parity compares two models with the same method on the same images: "
    "it tells whether the optimized model's evidence moved, not whether either explanation is right."
)

__all__ = ["CAVEAT", "METHODS", "ExplainConfig", "ExplainResult", "ExplanationParity", "explain",
           "explanation_parity", "find_target_layer", "heatmap_agreement"]
