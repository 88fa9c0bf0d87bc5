"""One fp32 pass over the calibration images that gathers everything the PTQ steps need.

For every activation tensor ONNX Runtime's QDQ quantizer will quantize: a histogram (for the range
methods). For every weighted layer, over the first `recon_images` images: the input Gram matrix
(masked by the following activation, see gptq.py) and the mean input (bias correction). The model
runs through vtool's ONNX Runtime runner with the intermediate tensors exposed as outputs and graph
only basic (semantics-preserving, no fusion) graph optimisation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolchain.quantize.gptq import LayerStats
from toolchain.quantize.graph import Layer, OnnxGraph, weight_matrix
from toolchain.quantize.ranges import Histogram
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)

CHUNK = 8  # images per inference while capturing (all intermediates of a 224px CNN: ~60 MB per image)


@dataclass
class Calibration:
    """Histograms per activation tensor and reconstruction statistics per layer."""

    histograms: dict[str, Histogram] = field(default_factory=dict)
    stats: dict[str, LayerStats] = field(default_factory=dict)
    images: int = 0
    recon_images: int = 0


def tensors_to_calibrate(graph: OnnxGraph, op_types: list[str] | None) -> list[str]:
    """The float activation tensors ONNX Runtime's calibrator would observe (inputs/outputs of candidate nodes)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(graph.model)
    infos = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
             + list(inferred.graph.input)}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    names: list[str] = []
    for node in inferred.graph.node:
        if op_types and node.op_type not in op_types:
            continue
        for name in list(node.input) + list(node.output):
            info = infos.get(name)
            if (info is None or name in graph.initializers or name in names
                    or not info.type.HasField("tensor_type") or info.type.tensor_type.elem_type not in floats):
                continue
            names.append(name)
    return names


def calibrate(fp32: Path, graph: OnnxGraph, spec: ModelSpec, batches: Iterable[np.ndarray], layers: list[Layer],
              tensors: list[str], recon_images: int, threads: int | None = None, seed: int = 0) -> Calibration:
    """Run the calibration batches once; see the module docstring for what is gathered."""
    from toolchain.runners import get_runner

    input_name = graph.input_name()
    outputs = set(graph.output_names())
    needed = set(tensors) | {layer.input for layer in layers} | {layer.output for layer in layers}
    expose = sorted(name for name in needed if name != input_name and name not in outputs)
    result = Calibration(histograms={name: Histogram() for name in tensors})
    for layer in layers:
        matrix = weight_matrix(layer, graph.array(layer.weight))
        result.stats[layer.name] = LayerStats(layer, graph.activation_after(layer), matrix.shape[0],
                                              matrix.shape[1] // 1, seed=seed)
    with get_runner("onnxruntime", fp32, spec=spec, threads=threads, graph_optimization="basic",
                    expose_outputs=expose) as runner:
        for batch in batches:
            for start in range(0, len(batch), CHUNK):
                chunk = batch[start:start + CHUNK]
                values = runner.run_outputs(chunk)
                values[input_name] = chunk
                for name, hist in result.histograms.items():
                    if name in values:
                        hist.add(values[name])
                if result.recon_images < recon_images:
                    take = min(len(chunk), recon_images - result.recon_images)
                    for layer in layers:
                        result.stats[layer.name].add(values[layer.input][:take], values[layer.output][:take])
                    result.recon_images += take
                result.images += len(chunk)
    log.info("calibrated on %d images (%d for layer reconstruction), %d activation tensors", result.images,
             result.recon_images, len(tensors))
    return result
