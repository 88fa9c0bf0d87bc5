"""Accuracy budget for INT8: measure on held-out data, rank layers by sensitivity, fall back.

The budget is a top-1 drop on labeled data (`max_drop`) or a top-1 agreement with the fp32 model
on unlabeled data (`min_agreement`). When static quantization misses it, the fallback first tries
better calibration (percentile, entropy: outlier-robust ranges help depthwise convs), then keeps
the most sensitive weighted layers in float, a growing number at a time, until the budget is met.
Sensitivity is ranked on calibration images only (never the held-out set): the output SQNR of
the fp32 model with one layer's weights quantized at a time. (Measured on pretrained
EfficientNet-Lite0: INT8 weights alone, no activation quantization, already cost 7% top-1
agreement on augmented photo crops; the first depthwise conv alone brings the output SQNR down to
~20 dB, because BatchNorm folding leaves channels whose large weights and bias nearly cancel.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.compare import Thresholds, compare
from toolchain.metrics import sqnr_db
from toolchain.runners import run_model
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)


def resolve_budget(max_drop: float | None, min_agreement: float | None, labeled: bool) -> Thresholds:
    """The INT8 budget as compare.Thresholds (both limits apply when both are set).

    Defaults: 1 point top-1 drop on labeled data, 0.99 agreement on unlabeled data.
    """
    if max_drop is None and min_agreement is None:
        return Thresholds(max_drop=0.01) if labeled else Thresholds(min_agreement=0.99)
    if not labeled and max_drop is not None and min_agreement is None:
        log.warning("--max-drop needs labeled data; judging by agreement >= 0.99 on unlabeled images instead")
        return Thresholds(min_agreement=0.99)
    return Thresholds(max_drop=max_drop if labeled else None, min_agreement=min_agreement)


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "agreement", "top1_ref", "top1_cand", "top1_delta", "cosine_mean", "sqnr_db", "max_abs_diff")
    return {k: metrics.get(k) for k in keys}


# ------------------------------------------------------------------ sensitivity


def fake_quant_weight(weight: np.ndarray, per_channel: bool, reduce_range: bool) -> np.ndarray:
    """Symmetric int8 (7-bit with reduce_range) quantize-dequantize, per output channel (axis 0) or per tensor."""
    qmax = 63 if reduce_range else 127
    w = weight.astype(np.float64)
    flat = w.reshape(w.shape[0], -1) if per_channel and w.ndim > 1 else w.reshape(1, -1)
    scale = np.abs(flat).max(axis=1, keepdims=True) / qmax
    scale[scale == 0] = 1.0
    return (np.clip(np.round(flat / scale), -qmax, qmax) * scale).reshape(w.shape).astype(weight.dtype)


def rank_sensitivity(fp32: Path, probe: np.ndarray, candidates: list[str], workdir: Path, spec: ModelSpec,
                     per_channel: bool = True, reduce_range: bool = False,
                     threads: int | None = None) -> list[tuple[str, float]]:
    """Rank weighted nodes by the output SQNR (dB) of the fp32 model with only that node's weights quantized.

    One inference on `probe` (calibration) images per node, no quantizer calls: cheap enough for
    every Conv/Gemm/MatMul. Lowest SQNR (most damage from one layer alone) first. On pretrained
    EfficientNet-Lite0 this singles out the first depthwise conv, whose BN-folded 3x3 kernels
    quantize badly, as the dominant source of error.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(fp32))
    inits = {i.name: i for i in model.graph.initializer}
    reference = run_model(fp32, probe, "onnxruntime", spec=spec, threads=threads)
    probe_path = workdir / "sensitivity-probe.onnx"
    ranking = []
    for node in model.graph.node:
        if node.name not in candidates:
            continue
        weight_name = next((i for i in node.input[1:] if i in inits and inits[i].dims and len(inits[i].dims) > 1),
                           None)
        if weight_name is None:
            continue
        init = inits[weight_name]
        original = numpy_helper.to_array(init).copy()
        init.CopyFrom(numpy_helper.from_array(fake_quant_weight(original, per_channel, reduce_range), weight_name))
        try:
            onnx.save(model, str(probe_path))
            out = run_model(probe_path, probe, "onnxruntime", spec=spec, threads=threads)
        finally:
            init.CopyFrom(numpy_helper.from_array(original, weight_name))
        ranking.append((node.name, float(min(sqnr_db(reference, out), 200.0))))
    ranking.sort(key=lambda kv: kv[1])
    return ranking


# ------------------------------------------------------------------ the fallback loop


@dataclass
class Attempt:
    step: str
    calibration: str
    float_nodes: list[str]
    metrics: dict[str, Any]
    passed: bool
    reason: str

    def row(self) -> dict[str, Any]:
        return {"step": self.step, "calibration": self.calibration, "float_nodes": len(self.float_nodes),
                "agreement": self.metrics.get("agreement"), "top1_cand": self.metrics.get("top1_cand"),
                "top1_delta": self.metrics.get("top1_delta"), "sqnr_db": self.metrics.get("sqnr_db"),
                "passed": self.passed, "reason": self.reason}


def judge(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None, budget: Thresholds,
          class_names: tuple[str, ...] = ()) -> tuple[dict[str, Any], bool, str]:
    """Metrics of one candidate, whether it meets the budget, and why not ('within budget' when it does)."""
    result = compare(reference, candidate, budget, labels, class_names)
    failures = result.check()
    return result.metrics, not failures, "; ".join(failures) or "within budget"


def exclusion_steps(max_nodes: int, available: int) -> list[int]:
    """How many of the most sensitive nodes to keep in float at each step: 1, 2, 4, 8, ... max."""
    limit = min(max_nodes, available)
    steps, k = [], 1
    while k < limit:
        steps.append(k)
        k *= 2
    if limit >= 1:
        steps.append(limit)
    return steps


def table(attempts: list[Attempt]) -> str:
    """A one-line-per-attempt summary for the ThresholdError message."""
    parts = []
    for a in attempts:
        figure = f"agree {a.metrics['agreement']:.3f}"
        if a.metrics.get("top1_delta") is not None:
            figure += f", drop {-a.metrics['top1_delta']:.3f}"
        parts.append(f"[{a.step}: {a.calibration}, {len(a.float_nodes)} float -> {figure}]")
    return " ".join(parts)

