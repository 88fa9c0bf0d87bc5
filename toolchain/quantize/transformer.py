"""Transformer-specific PTQ steps: which MatMuls stay float, and SmoothQuant (Xiao et al. 2023).

Attention score/context MatMuls multiply two activations: no constant weight to reconstruct and
wide, head-dependent ranges, so the ViT preset keeps them float (with LayerNorm/Softmax/GELU).
SmoothQuant migrates activation outliers into the weights for every MatMul/Gemm fed by a
LayerNormalization: per input channel j, s_j = max|X_j|^alpha / max|W_j|^(1-alpha); the LayerNorm's
scale and bias are divided by s_j and each consumer's weight row j multiplied by it, an exact
rewrite of the fp32 function that leaves per-tensor activation quantization less to clip.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from toolchain.quantize.graph import OnnxGraph

log = logging.getLogger(__name__)


def activation_matmuls(graph: OnnxGraph) -> list[str]:
    """MatMul nodes whose inputs are both activations (attention scores and context)."""
    return [n.name for n in graph.model.graph.node
            if n.op_type == "MatMul" and not any(graph.is_constant(i) for i in n.input)]


def smoothable(graph: OnnxGraph) -> list[tuple[Any, list[Any]]]:
    """(LayerNormalization node, the MatMul/Gemm nodes with constant weights it feeds) pairs."""
    pairs = []
    for node in graph.model.graph.node:
        if node.op_type != "LayerNormalization" or len(node.input) < 3:
            continue
        if not (graph.is_constant(node.input[1]) and graph.is_constant(node.input[2])):
            continue
        consumers = graph.consumers.get(node.output[0], [])
        linear = [c for c in consumers if c.op_type in ("MatMul", "Gemm") and len(c.input) > 1
                  and c.input[0] == node.output[0] and c.input[1] in graph.initializers]
        if linear and len(linear) == len(consumers) and all(_weight_rows(graph, c) is not None for c in linear):
            pairs.append((node, linear))
    return pairs


def _weight_rows(graph: OnnxGraph, node: Any) -> np.ndarray | None:
    """The consumer's weight as (input channels, outputs), or None when it is laid out otherwise."""
    weight = graph.array(node.input[1])
    if weight.ndim != 2:
        return None
    if node.op_type == "Gemm":
        attrs = {a.name: a.i for a in node.attribute if a.name in ("transA", "transB")}
        if attrs.get("transA"):
            return None
        return weight.T if attrs.get("transB") else weight
    return weight


def smooth(graph: OnnxGraph, alpha: float, maxima: dict[str, np.ndarray]) -> int:
    """Apply SmoothQuant in place to every LayerNorm -> linear group with known activation maxima."""
    done = 0
    for norm, linear in smoothable(graph):
        x_max = maxima.get(norm.output[0])
        if x_max is None:
            continue
        w_max = np.max([np.abs(_weight_rows(graph, c)).max(axis=1) for c in linear], axis=0)
        scale = np.power(np.maximum(x_max, 1e-5), alpha) / np.power(np.maximum(w_max, 1e-5), 1.0 - alpha)
        scale = np.clip(scale, 1e-2, 1e2).astype(np.float32)
        graph.set_array(norm.input[1], graph.array(norm.input[1]) / scale)
        graph.set_array(norm.input[2], graph.array(norm.input[2]) / scale)
        for node in linear:
            weight = graph.array(node.input[1])
            transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
            graph.set_array(node.input[1], weight * (scale[None, :] if transposed else scale[:, None]))
        done += 1
    return done
