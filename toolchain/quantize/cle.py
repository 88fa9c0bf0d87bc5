"""Cross-layer equalization with high-bias absorption (Nagel et al. 2019, "Data-Free Quantization").

For Conv1 -> f -> Conv2 with f positively homogeneous per channel (Relu, MaxPool or nothing), scaling
Conv1's output channel c by 1/s_c and Conv2's input channel c by s_c leaves the function unchanged.
s_c = sqrt(r1_c / r2_c) (r = the channel's largest |weight|) gives both layers the same per-channel
range, which is what per-TENSOR weight quantization needs. With per-channel weight scales (vtool's
default) every output channel already has its own scale, so `auto` applies CLE only with
`--per-tensor`. Clip(0, 6) (ReLU6) is not homogeneous (the clip would have to scale too), so
Conv -> ReLU6 -> Conv chains (MobileNet, EfficientNet-Lite) are left alone and said so.
High-bias absorption then moves the part of Conv1's bias that the Relu always passes (the channel's
minimum pre-activation over calibration images, when positive) into Conv2's bias, narrowing the
activation range between them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from toolchain.quantize.graph import Layer, OnnxGraph

log = logging.getLogger(__name__)

HOMOGENEOUS = ("Relu", "MaxPool")
ITERATIONS = 4


def _chain(graph: OnnxGraph, first: Layer, convs: dict[str, Layer]) -> tuple[Layer, list[str]] | None:
    """The Conv that `first` feeds through homogeneous ops only (each tensor used once), and those ops."""
    tensor, between = first.output, []
    while True:
        node = graph.next_op(tensor)
        if node is None:
            return None
        if node.op_type == "Conv":
            second = convs.get(node.name)
            return (second, between) if second is not None and node.input[0] == tensor else None
        if node.op_type not in HOMOGENEOUS:
            return None
        between.append(node.op_type)
        tensor = node.output[0]


def equalizable_pairs(graph: OnnxGraph) -> tuple[list[tuple[Layer, Layer, list[str]]], int]:
    """(Conv1, Conv2, ops between) pairs CLE can rescale, and how many Conv->Clip->Conv chains were skipped."""
    convs = {layer.name: layer for layer in graph.layers() if layer.op == "Conv"}
    pairs, clipped = [], 0
    for first in convs.values():
        found = _chain(graph, first, convs)
        if found is None:
            node = graph.next_op(first.output)
            if node is not None and node.op_type == "Clip":
                clipped += 1
            continue
        second, between = found
        channels = graph.array(first.weight).shape[0]
        w2 = graph.array(second.weight)
        if second.group == 1 and w2.shape[1] == channels or second.group == channels == w2.shape[0]:
            pairs.append((first, second, between))
    return pairs, clipped


def _ranges(graph: OnnxGraph, first: Layer, second: Layer) -> tuple[np.ndarray, np.ndarray]:
    w1, w2 = graph.array(first.weight), graph.array(second.weight)
    r1 = np.abs(w1.reshape(w1.shape[0], -1)).max(axis=1)
    r2 = np.abs(w2).max(axis=(1, 2, 3)) if second.group > 1 else np.abs(w2).max(axis=(0, 2, 3))
    return r1, r2


def _rescale(graph: OnnxGraph, first: Layer, second: Layer, scale: np.ndarray) -> None:
    w1, w2 = graph.array(first.weight), graph.array(second.weight)
    graph.set_array(first.weight, w1 / scale[:, None, None, None])
    if first.bias is not None:
        graph.set_array(first.bias, graph.array(first.bias) / scale)
    shape = (-1, 1, 1, 1) if second.group > 1 else (1, -1, 1, 1)
    graph.set_array(second.weight, w2 * scale.reshape(shape))


def equalize(graph: OnnxGraph, mode: str, per_channel: bool) -> tuple[bool, str, dict[str, Any]]:
    """Apply CLE in place when `mode` says so; returns (applied, note, figures) for the step record."""
    if mode == "off":
        return False, "off (--cle on to enable)", {}
    if mode == "auto" and per_channel:
        return False, "per-channel weight scales already give each channel its own range (--cle on to force)", {}
    pairs, clipped = equalizable_pairs(graph)
    if not pairs:
        why = "no Conv -> (Relu/MaxPool) -> Conv chains in this graph"
        if clipped:
            why += f"; {clipped} Conv -> Clip (ReLU6) chains are not scale-equivariant"
        return False, why, {"pairs": 0}
    before = [float(np.mean(r1 / np.maximum(r1.max(), 1e-12))) for r1, _ in (_ranges(graph, a, b) for a, b, _ in pairs)]
    for _ in range(ITERATIONS):
        for first, second, _ops in pairs:
            r1, r2 = _ranges(graph, first, second)
            valid = (r1 > 0) & (r2 > 0)
            scale = np.ones_like(r1)
            scale[valid] = np.sqrt(r1[valid] / r2[valid])
            _rescale(graph, first, second, scale.astype(np.float32))
    after = [float(np.mean(r1 / np.maximum(r1.max(), 1e-12))) for r1, _ in (_ranges(graph, a, b) for a, b, _ in pairs)]
    figures = {"pairs": len(pairs), "skipped_relu6_chains": clipped,
               "mean_channel_range_ratio_before": round(float(np.mean(before)), 3),
               "mean_channel_range_ratio_after": round(float(np.mean(after)), 3)}
    return True, f"{len(pairs)} Conv pairs equalized", figures


def absorb_high_biases(graph: OnnxGraph, pairs: list[tuple[Layer, Layer, list[str]]],
                       minima: dict[str, np.ndarray]) -> int:
    """Move the always-passed part of Conv1's bias (per-channel minimum pre-activation, when > 0) into Conv2.

    Only for a Relu between the two (identity chains have nothing to absorb); exact where the
    pre-activation stays above the absorbed amount, which the calibration minimum guarantees on
    the calibration images (zero padding at the borders of Conv2 is the known approximation).
    """
    absorbed = 0
    for first, second, between in pairs:
        if between != ["Relu"] or first.bias is None or first.output not in minima:
            continue
        amount = np.maximum(minima[first.output], 0.0).astype(np.float32)
        if not np.any(amount > 0):
            continue
        graph.set_array(first.bias, graph.array(first.bias) - amount)
        w2 = graph.array(second.weight)
        if second.group > 1:
            shift = w2.sum(axis=(1, 2, 3)) * amount
        else:
            shift = np.einsum("oikl,i->o", w2, amount)
        graph.add_bias(second, shift.astype(np.float32))
        absorbed += 1
    return absorbed
