"""What the quantizer needs to know about an fp32 ONNX graph: weighted layers, their tensors and shapes.

`OnnxGraph` wraps a ModelProto with look-ups (initializers, producers, consumers, constants) and
edits (replace a weight or bias). Every PTQ step reads and edits the graph through it, so the steps
never parse protobufs themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
TRANSFORMER_OPS = frozenset({"LayerNormalization", "Softmax", "Gelu", "Erf", "Attention", "SkipLayerNormalization",
                             "MultiHeadAttention", "BiasGelu", "FastGelu"})
QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                       "MatMulInteger", "DynamicQuantizeLinear", "QLinearAdd", "QGemm", "MatMulNBits", "QAttention"})


@dataclass(frozen=True)
class Layer:
    """One weighted node: Conv (any group), Gemm or MatMul with a constant weight."""

    name: str
    op: str
    input: str
    output: str
    weight: str
    bias: str | None
    group: int = 1
    strides: tuple[int, ...] = (1, 1)
    pads: tuple[int, ...] = (0, 0, 0, 0)
    dilations: tuple[int, ...] = (1, 1)
    kernel: tuple[int, ...] = (1, 1)
    trans_b: bool = False
    macs: int = 0
    weight_shape: tuple[int, ...] = ()

    @property
    def depthwise(self) -> bool:
        return self.op == "Conv" and self.group > 1

    @property
    def channelwise(self) -> bool:
        """One input and one output channel per group: what ONNX Runtime runs on its depthwise kernels."""
        return self.depthwise and len(self.weight_shape) == 4 and self.weight_shape[0] == self.group \
            and self.weight_shape[1] == 1


def node_attrs(node: Any) -> dict[str, Any]:
    """An ONNX node's attributes as Python values."""
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class OnnxGraph:
    """An fp32 ONNX model held in memory, with the look-ups the PTQ steps share."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.refresh()

    @classmethod
    def load(cls, path: str | Path) -> OnnxGraph:
        import onnx

        return cls(onnx.load(str(path)))

    def refresh(self) -> None:
        from onnx import numpy_helper

        graph = self.model.graph
        self.initializers = {i.name: i for i in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.constants = {n.output[0]: numpy_helper.to_array(a.t) for n in graph.node if n.op_type == "Constant"
                          for a in n.attribute if a.name == "value"}
        self.shapes = {}
        for info in list(graph.value_info) + list(graph.output) + list(graph.input):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
            self.shapes[info.name] = dims

    # ------------------------------------------------------------------ reading
    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        return np.asarray(self.constants[name])

    def is_constant(self, name: str) -> bool:
        return name in self.initializers or name in self.constants

    def input_name(self) -> str:
        inputs = [i.name for i in self.model.graph.input if i.name not in self.initializers]
        return inputs[0]

    def output_names(self) -> list[str]:
        return [o.name for o in self.model.graph.output]

    def op_types(self) -> set[str]:
        return {n.op_type for n in self.model.graph.node}

    def looks_like_transformer(self) -> bool:
        ops = self.op_types()
        return bool(ops & TRANSFORMER_OPS) and "MatMul" in ops

    def is_transformer(self, preset: str) -> bool:
        """What --preset says (vit: yes, cnn: no), or for auto what the graph's ops say."""
        return preset == "vit" or (preset == "auto" and self.looks_like_transformer())

    def quantized_ops(self) -> list[str]:
        return sorted(self.op_types() & QUANT_OPS)

    def layers(self) -> list[Layer]:
        """Weighted layers in graph order (Conv with explicit pads, plain Gemm, MatMul with a constant B)."""
        out = []
        for node in self.model.graph.node:
            if node.op_type not in WEIGHTED_OPS or len(node.input) < 2 or not self.is_constant(node.input[1]):
                continue
            layer = self._layer(node)
            if layer is not None:
                out.append(layer)
        return out

    def _layer(self, node: Any) -> Layer | None:
        attrs = node_attrs(node)
        weight = self.array(node.input[1])
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in self.initializers else None
        if node.op_type == "Conv":
            if weight.ndim != 4 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                return None
            layer = Layer(node.name, "Conv", node.input[0], node.output[0], node.input[1], bias,
                          int(attrs.get("group", 1)), tuple(attrs.get("strides", (1, 1))),
                          tuple(attrs.get("pads", (0, 0, 0, 0))), tuple(attrs.get("dilations", (1, 1))),
                          tuple(weight.shape[2:]))
        elif node.op_type == "Gemm":
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                return None
            layer = Layer(node.name, "Gemm", node.input[0], node.output[0], node.input[1], bias,
                          trans_b=bool(attrs.get("transB", 0)))
        else:
            if weight.ndim != 2:
                return None
            layer = Layer(node.name, "MatMul", node.input[0], node.output[0], node.input[1], None)
        return Layer(**{**layer.__dict__, "macs": self._macs(layer, weight), "weight_shape": tuple(weight.shape)})

    def _macs(self, layer: Layer, weight: np.ndarray) -> int:
        """Multiply-accumulates per image (0 when the output shape is unknown)."""
        out = self.shapes.get(layer.output)
        if layer.op == "Conv":
            if not out or len(out) != 4 or None in out[2:]:
                return 0
            return int(np.prod(weight.shape) * out[2] * out[3])
        positions = 1
        if out and len(out) > 2:
            dims = out[1:-1]
            positions = int(np.prod(dims)) if None not in dims else 0
        return int(np.prod(weight.shape) * positions)

    def activation_after(self, layer: Layer) -> tuple[float, float] | None:
        """(lo, hi) when the layer's only consumer is a Relu or a constant-bounded Clip, else None."""
        consumers = self.consumers.get(layer.output, [])
        if len(consumers) != 1 or layer.output in self.output_names():
            return None
        node = consumers[0]
        if node.op_type == "Relu":
            return (0.0, math.inf)
        if node.op_type != "Clip":
            return None
        bounds = []
        for index, default in ((1, -math.inf), (2, math.inf)):
            name = node.input[index] if len(node.input) > index else ""
            if not name:
                bounds.append(default)
            elif self.is_constant(name):
                bounds.append(float(np.asarray(self.array(name)).reshape(-1)[0]))
            else:
                return None
        return (bounds[0], bounds[1])

    def next_op(self, tensor: str) -> Any | None:
        consumers = self.consumers.get(tensor, [])
        return consumers[0] if len(consumers) == 1 else None

    # ------------------------------------------------------------------ editing
    def set_array(self, name: str, value: np.ndarray) -> None:
        from onnx import numpy_helper

        dtype = numpy_helper.to_array(self.initializers[name]).dtype
        self.initializers[name].CopyFrom(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))

    def add_bias(self, layer: Layer, value: np.ndarray) -> Layer:
        """Give a Conv/Gemm without a bias one (zeros + value); returns the updated Layer."""
        from onnx import numpy_helper

        if layer.bias is not None:
            self.set_array(layer.bias, self.array(layer.bias) + value)
            return layer
        name = f"{layer.weight}__vtool_bias"
        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        node = next(n for n in self.model.graph.node if n.name == layer.name)
        node.input.append(name)
        self.refresh()
        return Layer(**{**layer.__dict__, "bias": name})

    def save(self, path: str | Path) -> Path:
        import onnx

        onnx.save(self.model, str(path))
        return Path(path)


def weight_matrix(layer: Layer, weight: np.ndarray) -> np.ndarray:
    """The weight as (output channels, fan-in): Conv (O, I/g*kh*kw); Gemm transB (O, I); else transposed."""
    if layer.op == "Conv":
        return weight.reshape(weight.shape[0], -1)
    if layer.op == "Gemm" and layer.trans_b:
        return weight
    return weight.T


def from_matrix(layer: Layer, matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of weight_matrix."""
    if layer.op == "Conv":
        return matrix.reshape(shape)
    if layer.op == "Gemm" and layer.trans_b:
        return matrix.reshape(shape)
    return np.ascontiguousarray(matrix.T).reshape(shape)
