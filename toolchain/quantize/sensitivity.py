"""Which layers hurt most when quantized: one probe per layer, weights AND input activations.

A probe is the fp32 graph with exactly one layer quantized the way the final model will quantize it:
its reconstructed integer weights, and a quantize-dequantize pair on its input activation with the
chosen range. The model output SQNR on calibration images (never the judging images) ranks the
layers. Probing weights alone misses the activation side: on EfficientNet-Lite0 the worst tensor
is the stem's output feeding the first depthwise conv, whose high-gain channels amplify its
rounding noise (27 dB on its own, where every other tensor costs less than 36 dB).
Probes run with graph optimisation off: ONNX Runtime's fusions change fake-quantized float graphs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.metrics import sqnr_db
from toolchain.quantize.emit import IntWeight
from toolchain.quantize.graph import Layer, OnnxGraph
from toolchain.quantize.ranges import uint8_params
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)


def insert_fake_quant(model: Any, tensor: str, lo: float, hi: float) -> None:
    """Route every consumer of `tensor` through a uint8 QuantizeLinear/DequantizeLinear pair (in place)."""
    from onnx import helper, numpy_helper

    scale, zero = uint8_params(lo, hi)
    names = [f"{tensor}__probe_{suffix}" for suffix in ("s", "z", "q", "dq")]
    model.graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), names[0]),
                                    numpy_helper.from_array(np.array(zero, np.uint8), names[1])])
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name == tensor:
                node.input[index] = names[3]
    pair = [helper.make_node("QuantizeLinear", [tensor, names[0], names[1]], [names[2]]),
            helper.make_node("DequantizeLinear", [names[2], names[0], names[1]], [names[3]])]
    nodes = list(model.graph.node)
    position = next((i + 1 for i, n in enumerate(nodes) if tensor in n.output), 0)
    del model.graph.node[:]
    model.graph.node.extend(nodes[:position] + pair + nodes[position:])


def probe_model(graph: OnnxGraph, layer: Layer, weight: IntWeight, input_range: tuple[float, float] | None) -> Any:
    """A copy of the fp32 model with only `layer` quantized (weights, and its input when it has a range)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    original = graph.array(layer.weight)
    dequantized = _dequantize(layer, weight, original.shape).astype(original.dtype)
    for init in model.graph.initializer:
        if init.name == layer.weight:
            init.CopyFrom(numpy_helper.from_array(dequantized, layer.weight))
    if input_range is not None and layer.input not in {o.name for o in model.graph.output}:
        insert_fake_quant(model, layer.input, *input_range)
    return model


def _dequantize(layer: Layer, weight: IntWeight, shape: tuple[int, ...]) -> np.ndarray:
    from toolchain.quantize.graph import from_matrix, weight_matrix

    matrix = weight_matrix(layer, weight.values.astype(np.float64)) * weight.scales[:, None]
    return from_matrix(layer, matrix, shape)


def rank(graph: OnnxGraph, layers: list[Layer], weights: dict[str, IntWeight], ranges: dict[str, tuple[float, float]],
         probe: np.ndarray, spec: ModelSpec, workdir: Path, threads: int | None = None) -> list[tuple[str, float]]:
    """(layer name, model output SQNR dB with only that layer quantized), most damaging first."""
    import onnx

    from toolchain.runners import run_model

    reference = run_model(graph.save(workdir / "probe-reference.onnx"), probe, "onnxruntime", spec=spec,
                          threads=threads, graph_optimization="disable")
    path = workdir / "probe.onnx"
    ranking = []
    for layer in layers:
        if layer.weight not in weights:
            continue
        onnx.save(probe_model(graph, layer, weights[layer.weight], ranges.get(layer.input)), str(path))
        out = run_model(path, probe, "onnxruntime", spec=spec, threads=threads, graph_optimization="disable")
        ranking.append((layer.name, float(min(sqnr_db(reference, out), 200.0))))
    ranking.sort(key=lambda kv: kv[1])
    log.info("sensitivity: %s", ", ".join(f"{n} {v:.1f} dB" for n, v in ranking[:5]))
    return ranking
