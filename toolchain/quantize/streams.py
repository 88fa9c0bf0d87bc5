"""Activation equalization of linear streams: SmoothQuant for the residual streams of CNNs.

A "stream" is a set of tensors joined by residual Adds (or a single tensor) that every Conv writing
it produces without an activation and every Conv reading it consumes directly, e.g. the projection
outputs and residual sums of one EfficientNet/MobileNetV2 stage. Nothing nonlinear touches a stream,
so dividing its channel c by s_c (in every writer's weights and bias) and multiplying every reader's
input channel c by s_c leaves the model's function unchanged. Per-tensor uint8 activations then see
channels of similar range: with s_c = r_c^alpha / w_c^(1 - alpha) (r_c: the channel's largest |value|
over calibration images, w_c: its largest reader weight) the activation range narrows while the
readers' per-channel weight scales absorb the difference (Xiao et al. 2023 for transformers; the same
algebra applies here). On EfficientNet-Lite0 the stream tensors were the costliest activations left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolchain.quantize.graph import Layer, OnnxGraph

log = logging.getLogger(__name__)


@dataclass
class Stream:
    """Tensors sharing one channel scaling, the Convs writing them and the Convs reading them."""

    tensors: list[str] = field(default_factory=list)
    writers: list[Layer] = field(default_factory=list)
    readers: list[Layer] = field(default_factory=list)


def find_streams(graph: OnnxGraph) -> list[Stream]:
    """Every stream whose scaling is exact (see the module docstring); others are left alone."""
    convs = {layer.output: layer for layer in graph.layers() if layer.op == "Conv"}
    by_name = {layer.name: layer for layer in graph.layers() if layer.op == "Conv"}
    parent: dict[str, str] = {}

    def find(t: str) -> str:
        while parent.setdefault(t, t) != t:
            t = parent[t]
        return t

    adds = [n for n in graph.model.graph.node if n.op_type == "Add" and len(n.input) == 2]
    for node in adds:
        for name in (*node.input, node.output[0]):
            parent[find(name)] = find(node.output[0])
    for tensor in convs:
        find(tensor)
    groups: dict[str, list[str]] = {}
    for tensor in parent:
        groups.setdefault(find(tensor), []).append(tensor)
    add_outputs = {n.output[0] for n in adds}
    outputs = set(graph.output_names())
    streams = []
    for tensors in groups.values():
        stream = _check(graph, tensors, convs, by_name, add_outputs, outputs)
        if stream is not None:
            streams.append(stream)
    return streams


def _check(graph: OnnxGraph, tensors: list[str], convs: dict[str, Layer], by_name: dict[str, Layer],
           add_outputs: set[str], outputs: set[str]) -> Stream | None:
    members = set(tensors)
    stream = Stream(sorted(tensors))
    for tensor in tensors:
        if tensor in outputs or graph.is_constant(tensor):
            return None
        if tensor in convs:
            stream.writers.append(convs[tensor])
        elif tensor not in add_outputs:
            return None  # produced by something else (an activation, the graph input...)
        for consumer in graph.consumers.get(tensor, []):
            if consumer.op_type == "Add" and consumer.output[0] in members:
                continue
            reader = by_name.get(consumer.name)
            if reader is None or consumer.input[0] != tensor:
                return None
            stream.readers.append(reader)
    if not stream.writers or not stream.readers:
        return None
    channels = {graph.array(w.weight).shape[0] for w in stream.writers}
    if len(channels) != 1:
        return None
    count = channels.pop()
    for reader in stream.readers:
        w = graph.array(reader.weight)
        if not (reader.group == 1 and w.shape[1] == count or reader.group == count == w.shape[0]):
            return None
    return stream


def _reader_columns(graph: OnnxGraph, reader: Layer) -> np.ndarray:
    """Largest |weight| per input channel of a reader Conv."""
    w = np.abs(graph.array(reader.weight))
    return w.max(axis=(1, 2, 3)) if reader.group > 1 else w.max(axis=(0, 2, 3))


def equalize_streams(graph: OnnxGraph, streams: list[Stream], maxima: dict[str, np.ndarray],
                     alpha: float) -> dict[str, Any]:
    """Rescale every stream in place; returns figures for the step record."""
    narrowed = []
    for stream in streams:
        ranges = [maxima[t] for t in stream.tensors if t in maxima]
        if not ranges:
            continue
        r = np.max(ranges, axis=0).astype(np.float64)
        w = np.max([_reader_columns(graph, reader) for reader in stream.readers], axis=0).astype(np.float64)
        scale = np.power(np.maximum(r, 1e-6), alpha) / np.power(np.maximum(w, 1e-6), 1.0 - alpha)
        scale = scale / np.exp(np.mean(np.log(scale)))  # geometric mean 1: keep magnitudes where they were
        scale = np.clip(scale, 1e-2, 1e2).astype(np.float32)
        for writer in stream.writers:
            graph.set_array(writer.weight, graph.array(writer.weight) / scale[:, None, None, None])
            if writer.bias is not None:
                graph.set_array(writer.bias, graph.array(writer.bias) / scale)
        for reader in set(stream.readers):
            shape = (-1, 1, 1, 1) if reader.group > 1 else (1, -1, 1, 1)
            graph.set_array(reader.weight, graph.array(reader.weight) * scale.reshape(shape))
        narrowed.append(float(r.max() / np.median(r)) / float((r / scale).max() / np.median(r / scale)))
    return {"streams": len(narrowed), "tensors": sum(len(s.tensors) for s in streams),
            "mean_range_narrowing": round(float(np.mean(narrowed)), 2) if narrowed else 1.0, "alpha": alpha}
