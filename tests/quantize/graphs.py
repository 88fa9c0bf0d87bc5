"""Tiny hand-built ONNX graphs for the PTQ step tests (exact structure, no exporter in the loop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from toolchain.spec import ModelSpec

SPEC = ModelSpec(architecture="tiny-graph", num_classes=10, input_size=(8, 8))


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def _head(features: str) -> list[onnx.NodeProto]:
    """GlobalAveragePool -> Flatten -> Gemm(w3, b3) from `features` to the logits."""
    return [helper.make_node("GlobalAveragePool", [features], ["gap"], name="gap"),
            helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
            helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], name="fc", transB=1)]


def _classifier(name: str, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    """A graph from input (N, 3, 8, 8) to logits (N, 10), opset 17, with inferred shapes."""
    graph = helper.make_graph(nodes, name,
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def conv_net(act: str = "Relu", channels: int = 6, seed: int = 0, bias_scale: float = 0.1) -> onnx.ModelProto:
    """input (N,3,8,8) -> Conv 3x3 -> act -> Conv 3x3 -> Relu -> GlobalAveragePool -> Flatten -> Gemm(10)."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (channels, 3, 3, 3)) * rng.uniform(0.05, 3.0, (channels, 1, 1, 1))  # uneven channels
    inits = [_init("w1", w1), _init("b1", rng.normal(0, bias_scale, channels)),
             _init("w2", rng.normal(0, 0.3, (8, channels, 3, 3))), _init("b2", rng.normal(0, 0.1, 8)),
             _init("w3", rng.normal(0, 0.3, (10, 8))), _init("b3", np.zeros(10))]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1])]
    if act == "Clip":
        inits += [_init("lo", np.array(0.0)), _init("hi", np.array(6.0))]
        nodes.append(helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"], name="act1"))
    elif act == "none":
        nodes.append(helper.make_node("Identity", ["c1"], ["a1"], name="act1"))
    else:
        nodes.append(helper.make_node(act, ["c1"], ["a1"], name="act1"))
    nodes += [helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c2"], ["a2"], name="act2"),
              helper.make_node("GlobalAveragePool", ["a2"], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], name="fc", transB=1)]
    return _classifier("tiny", nodes, inits)


def layernorm_net(seed: int = 0, hidden: int = 16, outlier: float = 20.0) -> onnx.ModelProto:
    """input (N, T, H) -> LayerNormalization (one outlier channel) -> MatMul q / MatMul v -> Add -> ReduceMean."""
    rng = np.random.default_rng(seed)
    gamma = np.ones(hidden)
    gamma[3] = outlier  # an outlier channel, as in transformer activations
    inits = [_init("gamma", gamma), _init("beta", rng.normal(0, 0.1, hidden)),
             _init("wq", rng.normal(0, 0.3, (hidden, hidden))), _init("wv", rng.normal(0, 0.3, (hidden, hidden)))]
    nodes = [helper.make_node("LayerNormalization", ["input", "gamma", "beta"], ["ln"], name="ln", axis=-1),
             helper.make_node("MatMul", ["ln", "wq"], ["q"], name="mm_q"),
             helper.make_node("MatMul", ["ln", "wv"], ["v"], name="mm_v"),
             helper.make_node("Add", ["q", "v"], ["s"], name="add"),
             helper.make_node("ReduceMean", ["s"], ["logits"], name="mean", axes=[1], keepdims=0)]
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["batch", 5, hidden])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def run(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]


def residual_net(seed: int = 0, channels: int = 6) -> onnx.ModelProto:
    """conv0 -> relu -> conv_a (t1, no act) ; t1 -> conv_b -> relu -> conv_c (t2) ; t1 + t2 = t3 -> conv_d -> head.

    {t1, t2, t3} is one linear stream: written by conv_a and conv_c, read by conv_b and conv_d.
    """
    rng = np.random.default_rng(seed)
    uneven = rng.uniform(0.05, 4.0, (channels, 1, 1, 1))  # stream channels of very different ranges
    inits = [_init("w0", rng.normal(0, 0.5, (channels, 3, 3, 3))), _init("b0", rng.normal(0, 0.1, channels)),
             _init("wa", rng.normal(0, 0.3, (channels, channels, 1, 1)) * uneven),
             _init("ba", rng.normal(0, 0.1, channels)),
             _init("wb", rng.normal(0, 0.3, (channels, channels, 3, 3))), _init("bb", rng.normal(0, 0.1, channels)),
             _init("wc", rng.normal(0, 0.3, (channels, channels, 1, 1)) * uneven),
             _init("bc", rng.normal(0, 0.1, channels)),
             _init("wd", rng.normal(0, 0.3, (8, channels, 1, 1))), _init("bd", rng.normal(0, 0.1, 8)),
             _init("w3", rng.normal(0, 0.3, (10, 8))), _init("b3", np.zeros(10))]
    nodes = [helper.make_node("Conv", ["input", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["a0"], name="act0"),
             helper.make_node("Conv", ["a0", "wa", "ba"], ["t1"], name="conv_a"),
             helper.make_node("Conv", ["t1", "wb", "bb"], ["cb"], name="conv_b", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["cb"], ["ab"], name="actb"),
             helper.make_node("Conv", ["ab", "wc", "bc"], ["t2"], name="conv_c"),
             helper.make_node("Add", ["t1", "t2"], ["t3"], name="add"),
             helper.make_node("Conv", ["t3", "wd", "bd"], ["cd"], name="conv_d"),
             helper.make_node("Relu", ["cd"], ["ad"], name="actd"),
             *_head("ad")]
    return _classifier("residual", nodes, inits)


def separable_net(seed: int = 0, channels: int = 8) -> onnx.ModelProto:
    """conv0 3x3 -> relu -> depthwise 3x3 (group = channels) -> relu -> 1x1 -> relu -> head: a MobileNet block."""
    rng = np.random.default_rng(seed)
    inits = [_init("w0", rng.normal(0, 0.5, (channels, 3, 3, 3))), _init("b0", rng.normal(0, 0.1, channels)),
             _init("wdw", rng.normal(0, 0.5, (channels, 1, 3, 3))), _init("bdw", rng.normal(0, 0.1, channels)),
             _init("wpw", rng.normal(0, 0.3, (channels, channels, 1, 1))), _init("bpw", rng.normal(0, 0.1, channels)),
             _init("w3", rng.normal(0, 0.3, (10, channels))), _init("b3", np.zeros(10))]
    nodes = [helper.make_node("Conv", ["input", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["a0"], name="act0"),
             helper.make_node("Conv", ["a0", "wdw", "bdw"], ["cdw"], name="conv_dw", pads=[1, 1, 1, 1],
                              group=channels),
             helper.make_node("Relu", ["cdw"], ["adw"], name="act_dw"),
             helper.make_node("Conv", ["adw", "wpw", "bpw"], ["cpw"], name="conv_pw"),
             helper.make_node("Relu", ["cpw"], ["apw"], name="act_pw"),
             *_head("apw")]
    return _classifier("separable", nodes, inits)


# 7-bit weights (reduce_range), as vtool's AVX2 target uses: without VNNI, ONNX Runtime's u8*s8 kernel sums pairs
# into saturating int16 and 8-bit weights can overflow, so tests that compare with ORT's output would depend on the CPU.
WEIGHT_QMAX = 64


def clipped_qdq(tmp_path: Path, x: np.ndarray, squeeze: float) -> tuple[Any, Path, Path, dict[str, Any]]:
    """conv_net quantized with the first activation's range cut to `squeeze` of its maximum: a systematic error.
    Weights are 7-bit (WEIGHT_QMAX), so ONNX Runtime computes the same on AVX2-only and VNNI CPUs."""
    from toolchain.quantize import emit, gptq
    from toolchain.quantize.graph import OnnxGraph, weight_matrix
    from toolchain.runners import get_runner

    src = OnnxGraph(conv_net()).save(tmp_path / "fp32.onnx")
    graph = OnnxGraph.load(src)
    names = ["c1", "a1", "c2", "a2", "gap", "flat", "logits"]
    with get_runner("onnxruntime", src, spec=SPEC, graph_optimization="disable", expose_outputs=names[:-1]) as r:
        values = r.run_outputs(x)
    ranges = {n: (min(float(v.min()), 0.0), max(float(v.max()), 0.0)) for n, v in values.items()}
    ranges["input"] = (float(x.min()), float(x.max()))
    ranges["a1"] = (0.0, ranges["a1"][1] * squeeze)
    cache = emit.write_ranges(ranges, tmp_path / "ranges.json")
    qdq = emit.quantize_qdq(src, tmp_path / "q.onnx", cache, per_channel=True, reduce_range=True,
                            activation_type="uint8", weight_type="int8", exclude=[], op_types=None)
    weights = {}
    for layer in graph.layers():
        w = graph.array(layer.weight)
        scales = gptq.symmetric_scales(weight_matrix(layer, w), WEIGHT_QMAX)
        weights[layer.weight] = emit.IntWeight(np.round(w / scales.reshape(-1, *[1] * (w.ndim - 1))), scales)
    biases = {layer.bias: graph.array(layer.bias) for layer in graph.layers()}
    emit.patch_weights(qdq, qdq, weights, biases)
    return graph, src, qdq, weights
