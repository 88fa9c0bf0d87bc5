"""Explanations: heatmaps for a model's answer (`vtool explain`) and explanation parity (`vtool parity --explain`):
does an optimized model (INT8, export) still look at the same pixels as the original?

    methods.py   Grad-CAM / Grad-CAM++ (grad-cam package, torch models) and occlusion (any Runner)
    core.py      ExplainConfig -> explain(model, images) -> ExplainResult, PNG overlays with the top-k labels
    agree.py     heatmap agreement (Spearman rank correlation, top-region IoU) and explanation_parity()
    figures.py   overlays and the worst pairs side by side (matplotlib)
"""

from __future__ import annotations

from toolchain import callable_module
from toolchain.explain.agree import ExplanationParity, explanation_parity, heatmap_agreement
from toolchain.explain.core import ExplainConfig, ExplainResult, explain
from toolchain.explain.methods import CAVEAT, METHODS, find_target_layer

__all__ = ["CAVEAT", "METHODS", "ExplainConfig", "ExplainResult", "ExplanationParity", "explain",
           "explanation_parity", "find_target_layer", "heatmap_agreement"]
callable_module(__name__, explain)  # `from toolchain import explain; explain(...)` calls the function
