"""The budget search: every weighted layer INT8 first; float only where it buys accuracy and keeps the speed.

Candidate 0 quantizes every Conv/Gemm/MatMul. When it misses the budget, layers are ranked by
probes (sensitivity.py) and the most damaging are kept in float, one more at a time at first, then
doubling; every candidate is judged on the held-out images AND timed against fp32 on the same
runtime. The search stops as soon as a candidate passes, or when keeping more layers float would
make the INT8 model slower than `min_speedup` x fp32: INT8 that is not faster has no reason to
exist, so the stage then exits 3 with the table of what was tried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.quantize.graph import Layer, OnnxGraph

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One INT8 model: what was kept float, how it judged, how fast it ran."""

    step: str
    path: Path
    float_layers: list[str]
    metrics: dict[str, Any]
    failures: list[str]
    float_macs_share: float = 0.0
    speedup: float | None = None
    calibration: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def reason(self) -> str:
        return "; ".join(self.failures) or "within budget"

    def row(self) -> dict[str, Any]:
        m = self.metrics
        return {"step": self.step, "calibration": self.calibration, "float_nodes": len(self.float_layers),
                "float_macs_pct": round(100 * self.float_macs_share, 2), "agreement": m.get("agreement"),
                "top1_cand": m.get("top1_cand"), "top1_delta": m.get("top1_delta"), "sqnr_db": m.get("sqnr_db"),
                "speedup_vs_fp32": self.speedup, "passed": self.passed, "reason": self.reason}


@dataclass
class SearchOutcome:
    chosen: Candidate
    candidates: list[Candidate]
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = ""


def close_float_islands(graph: OnnxGraph, names: list[str]) -> list[str]:
    """Add, for each layer kept float, the weighted layer feeding it through a Relu/Clip.

    ORT's QDQ quantizer folds a Relu/Clip into the QuantizeLinear of its producer's output; with the
    consumer in float no QuantizeLinear is emitted there and the folded activation is lost (measured
    on EfficientNet-Lite0: the first depthwise conv kept float alone collapsed agreement to 0.53;
    with the stem feeding it also float, 0.84). Keeping the producer float keeps the Clip in place.
    """
    result = list(names)
    for name in names:
        node = next((n for n in graph.model.graph.node if n.name == name), None)
        if node is None or not node.input:
            continue
        act = graph.producer.get(node.input[0])
        if act is not None and act.op_type in ("Relu", "Clip") and act.input:
            source = graph.producer.get(act.input[0])
            if source is not None and source.op_type in ("Conv", "Gemm", "MatMul") and source.name not in result:
                result.append(source.name)
    return result


def float_steps(limit: int) -> list[int]:
    """How many of the most damaging layers to keep float: 1, 2, 3, 4, then doubling, up to `limit`."""
    steps, k = [], 1
    while k < limit:
        steps.append(k)
        k = k + 1 if k < 4 else k * 2
    if limit >= 1:
        steps.append(limit)
    return steps


def macs_share(layers: list[Layer], names: list[str]) -> float:
    total = sum(layer.macs for layer in layers)
    return sum(layer.macs for layer in layers if layer.name in names) / total if total else 0.0


def run_search(build: Callable[[list[str], str], Path], judge: Callable[[str, Path, list[str]], Candidate],
               rank: Callable[[], list[tuple[str, float]]], speed: Callable[[Path], float | None],
               graph: OnnxGraph, max_float: int, min_speedup: float, enabled: bool) -> SearchOutcome:
    """See the module docstring; `judge` returns a Candidate, `speed` a speed-up over fp32 (None: unknown)."""
    first = judge("all-int8", build([], "all"), [])
    candidates = [first]
    if first.passed or not enabled or max_float == 0:
        return SearchOutcome(first, candidates, stopped="" if first.passed else "fallback off")
    first.speedup = speed(first.path)
    ranking = rank()
    sensitivity = [{"node": n, "probe_sqnr_db": round(v, 2)} for n, v in ranking[:20]]
    best, previous, stopped = first, set(), "every step tried"
    for k in float_steps(min(max_float, len(ranking))):
        chosen = close_float_islands(graph, [n for n, _ in ranking[:k]])
        if set(chosen) == previous:
            continue
        previous = set(chosen)
        candidate = judge(f"float-top-{k}", build(chosen, f"float{k}"), chosen)
        candidate.speedup = speed(candidate.path)
        candidates.append(candidate)
        if candidate.speedup is not None and candidate.speedup < min_speedup:
            candidate.failures.append(f"{candidate.speedup:.2f}x fp32 speed < --min-speedup {min_speedup:g}")
            stopped = f"keeping {len(chosen)} layers float makes INT8 slower than {min_speedup:g}x fp32"
            break
        if candidate.passed:
            return SearchOutcome(candidate, candidates, sensitivity)
        if _score(candidate) > _score(best):
            best = candidate
    log.info("budget search stopped: %s", stopped)
    return SearchOutcome(best, candidates, sensitivity, stopped)


def _score(candidate: Candidate) -> tuple[float, float]:
    m = candidate.metrics
    primary = m["top1_cand"] if m.get("top1_cand") is not None else m["agreement"]
    return primary, m.get("sqnr_db") or 0.0
