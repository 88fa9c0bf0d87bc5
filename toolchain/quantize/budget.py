"""Accuracy budget for INT8: measure on held-out data, rank layers by sensitivity, fall back.

The budget is a top-1 drop on labeled data (`max_drop`) or a top-1 agreement with the fp32 model
on unlabeled data (`min_agreement`). When static quantization misses it, the fallback first tries
better calibration (percentile, entropy: outlier-robust ranges help depthwise convs), then keeps
the most sensitive weighted layers in float, a growing number at a time, until the budget is met.
Sensitivity is ranked on calibration images only (never the held-out set): the SQNR (dB) each
layer loses between its input and its output when the whole model runs quantized.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.metrics import compare_logits, sqnr_db

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """The accuracy gate: both limits apply when both are set."""

    max_drop: float | None
    min_agreement: float | None

    def check(self, metrics: dict[str, Any]) -> tuple[bool, str]:
        reasons = []
        if self.max_drop is not None and metrics.get("top1_delta") is not None:
            drop = -metrics["top1_delta"]
            if drop > self.max_drop + 1e-12:
                reasons.append(f"top-1 drop {drop:.4f} > max {self.max_drop:.4f}")
        if self.min_agreement is not None and metrics["agreement"] < self.min_agreement - 1e-12:
            reasons.append(f"agreement {metrics['agreement']:.4f} < min {self.min_agreement:.4f}")
        return not reasons, "; ".join(reasons) or "within budget"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_budget(max_drop: float | None, min_agreement: float | None, labeled: bool) -> Budget:
    """Defaults: 1 point top-1 drop on labeled data, 0.99 agreement on unlabeled data."""
    if max_drop is None and min_agreement is None:
        return Budget(0.01, None) if labeled else Budget(None, 0.99)
    if not labeled and max_drop is not None and min_agreement is None:
        log.warning("--max-drop needs labeled data; judging by agreement >= 0.99 on unlabeled images instead")
        return Budget(None, 0.99)
    return Budget(max_drop if labeled else None, min_agreement)


def ort_session(path: str | Path, threads: int | None = None, intermediate: bool = False) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(session: Any, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: np.ascontiguousarray(x[i:i + batch_size])})[0]
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs).astype(np.float32)


def onnx_logits(path: str | Path, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    return run_session(ort_session(path, threads), x)


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "agreement", "top1_ref", "top1_cand", "top1_delta", "cosine_mean", "sqnr_db", "max_abs_diff")
    return {k: metrics.get(k) for k in keys}


# ------------------------------------------------------------------ sensitivity


def _with_all_outputs(path: Path, out: Path, names: list[str]) -> None:
    import onnx

    model = onnx.load(str(path))
    existing = {o.name for o in model.graph.output}
    produced = {o for n in model.graph.node for o in n.output}
    for name in names:
        if name not in existing and name in produced:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    onnx.save(model, str(out))


def _clip_bounds(graph: Any) -> dict[str, tuple[float | None, float | None]]:
    """Output tensor -> (min, max) of float Clip/Relu nodes (the QDQ quantizer folds them into Q ranges)."""
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    bounds: dict[str, tuple[float | None, float | None]] = {}
    for node in graph.node:
        if node.op_type == "Relu":
            bounds[node.output[0]] = (0.0, None)
        elif node.op_type == "Clip":
            low = float(consts[node.input[1]]) if len(node.input) > 1 and node.input[1] in consts else None
            high = float(consts[node.input[2]]) if len(node.input) > 2 and node.input[2] in consts else None
            bounds[node.output[0]] = (low, high)
    return bounds


def rank_sensitivity(fp32: Path, qdq: Path, probe: np.ndarray, candidates: list[str], workdir: Path,
                     threads: int | None = None) -> list[tuple[str, float]]:
    """Rank weighted nodes by the SQNR (dB) they lose in the quantized model, worst first.

    For a node with input tensor a and output b (b: after its Relu/Clip when one follows), loss =
    SQNR(a) - SQNR(b), where SQNR(t) compares t in the fp32 model with t in the QDQ model on
    `probe` (calibration) images. The QDQ quantizer removes Relu/Clip (their range lives in the Q
    node), so those tensors are clipped here before comparing. Early layers, where the signal is
    still clean, lose the most dB: they are the ones worth keeping in float.
    """
    import onnx

    graph = onnx.load(str(fp32), load_external_data=False).graph
    bounds = _clip_bounds(graph)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes = {n.name: n for n in graph.node if n.name in set(candidates)}

    def after_activation(tensor: str) -> str:
        users = consumers.get(tensor, [])
        if len(users) == 1 and users[0].op_type in ("Relu", "Clip"):
            return users[0].output[0]
        return tensor

    pairs = {name: (node.input[0], after_activation(node.output[0])) for name, node in nodes.items()}
    inputs = {i.name for i in graph.input}
    watch = sorted({t for pair in pairs.values() for t in pair if t not in inputs})
    float_aug, q_aug = workdir / "sens-fp32.onnx", workdir / "sens-int8.onnx"
    _with_all_outputs(fp32, float_aug, watch)
    _with_all_outputs(qdq, q_aug, watch)
    values = {}
    for label, path in (("float", float_aug), ("int8", q_aug)):
        session = ort_session(path, threads)
        names = [o.name for o in session.get_outputs()]
        values[label] = dict(zip(names, session.run(None, {session.get_inputs()[0].name: probe}), strict=True))

    def tensor_sqnr(name: str) -> float | None:
        if name in inputs:
            return 100.0  # the model input carries no quantization noise (cap instead of inf)
        if name not in values["int8"] or name not in values["float"]:
            return None
        quantized = values["int8"][name]
        if name in bounds:
            low, high = bounds[name]
            quantized = np.clip(quantized, low, high)
        return min(100.0, sqnr_db(values["float"][name], quantized))

    ranking = []
    for name, (src, dst) in pairs.items():
        before, after = tensor_sqnr(src), tensor_sqnr(dst)
        if before is not None and after is not None:
            ranking.append((name, float(before - after)))
    ranking.sort(key=lambda kv: -kv[1])
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


def judge(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None, budget: Budget,
          class_names: tuple[str, ...] = ()) -> tuple[dict[str, Any], bool, str]:
    metrics = compare_logits(reference, candidate, labels, class_names)
    passed, reason = budget.check(metrics)
    return metrics, passed, reason


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


Evaluate = Callable[[Path], np.ndarray]
