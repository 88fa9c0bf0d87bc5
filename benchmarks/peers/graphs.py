"""What a quantized ONNX graph left in float, counted the same way for every tool.

A weighted layer is a Conv, Gemm or MatMul whose second input is a constant (an initializer, or a
DequantizeLinear / Transpose / Reshape of one). It runs in INT8 when both its data input and its
weight come out of a DequantizeLinear, directly or through data-movement ops (Reshape, Transpose,
Gather, ...: values pass unchanged, and runtimes move the quantization across them); otherwise it
is float. MatMuls between two activations (attention scores and context) are counted
apart: they have no weight, and quantizers differ on whether they quantize them. Dynamic INT8
(MatMulInteger, ConvInteger, QAttention) counts as INT8; a fused fp32 Attention as a float layer.
Where ONNX cannot infer a layer's output shape (contrib ops), the MACs share is not given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
DYNAMIC_INT8 = ("MatMulInteger", "ConvInteger", "QAttention", "DynamicQuantizeMatMul")
PASS_THROUGH = ("DequantizeLinear", "QuantizeLinear", "Transpose", "Reshape", "Cast", "Identity", "Unsqueeze",
                "Squeeze")
MOVES = ("Transpose", "Reshape", "Identity", "Unsqueeze", "Squeeze", "Flatten", "Gather", "Slice")


@dataclass(frozen=True)
class FloatLayers:
    """Weighted layers left in float (names), how many there are, and their share of the MACs."""

    float_layers: list[str]
    total: int
    float_macs_pct: float | None
    attention_float: int  # activation x activation MatMuls left in float
    attention_total: int

    def label(self) -> str:
        """Short table text: 'N of M (x% MACs)'."""
        text = f"{len(self.float_layers)} of {self.total}"
        if self.float_layers and self.float_macs_pct is not None:
            text += f" ({self.float_macs_pct:.1f}% MACs)"
        if self.attention_total:
            text += f"; attn MatMul {self.attention_float}/{self.attention_total} float"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {"float_layers": self.float_layers, "float_count": len(self.float_layers), "total": self.total,
                "float_macs_pct": self.float_macs_pct, "attention_matmuls_float": self.attention_float,
                "attention_matmuls_total": self.attention_total, "label": self.label()}


class _Graph:
    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        graph = model.graph
        self.nodes = list(graph.node)
        self.initializers = {i.name: tuple(i.dims) for i in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.constants = {n.output[0]: tuple(numpy_helper.to_array(a.t).shape) for n in graph.node
                          if n.op_type == "Constant" for a in n.attribute if a.name == "value"}
        self.shapes: dict[str, list[int | None]] = {}
        for info in list(graph.value_info) + list(graph.output):
            dims = info.type.tensor_type.shape.dim
            self.shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]

    def constant_shape(self, name: str, depth: int = 0) -> tuple[int, ...] | None:
        """The shape of the constant behind `name` (through DQ/Transpose/Reshape...), or None for an activation."""
        if name in self.initializers:
            return self.initializers[name]
        if name in self.constants:
            return self.constants[name]
        node = self.producer.get(name)
        if node is None or node.op_type not in PASS_THROUGH or depth > 4 or not node.input:
            return None
        return self.constant_shape(node.input[0], depth + 1)

    def dequantized(self, name: str) -> bool:
        """`name` comes out of a DequantizeLinear, directly or through data-movement ops (MOVES)."""
        node = self.producer.get(name)
        for _ in range(6):
            if node is None:
                return False
            if node.op_type == "DequantizeLinear":
                return True
            if node.op_type not in MOVES or not node.input:
                return False
            node = self.producer.get(node.input[0])
        return False

    def macs(self, node: Any, weight: tuple[int, ...]) -> int:
        """Multiply-accumulates of one weighted node (0 when its output shape is unknown)."""
        out = self.shapes.get(node.output[0])
        if not out:
            return 0
        if node.op_type == "Conv":
            spatial = out[2:]
            return int(np.prod(weight)) * int(np.prod(spatial)) if spatial and None not in spatial else 0
        positions = out[1:-1]
        return int(np.prod(weight)) * (int(np.prod(positions)) if None not in positions else 0)


def _with_shapes(path: Path) -> Any:
    """The model with inferred shapes where ONNX can infer them (for MACs)."""
    import onnx

    model = onnx.load(str(path))
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - MACs are informative; counting layers needs no shapes
        return model


def float_layers(path: str | Path) -> FloatLayers:
    """Count the weighted layers `path` runs in float (see the module docstring)."""
    graph = _Graph(_with_shapes(Path(path)))
    floats: list[str] = []
    total = attention = attention_float = 0
    macs_all = macs_float = 0
    macs_known = True
    for node in graph.nodes:
        if node.op_type in DYNAMIC_INT8 or node.op_type == "Attention":
            total += 1
            macs_known = False
            if node.op_type == "Attention":
                floats.append(node.name or node.output[0])
            continue
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        weight = graph.constant_shape(node.input[1])
        quantized = graph.dequantized(node.input[0]) and graph.dequantized(node.input[1])
        if weight is None:
            attention += 1
            attention_float += not quantized
            continue
        total += 1
        macs = graph.macs(node, weight)
        macs_all += macs
        if not quantized:
            floats.append(node.name or node.output[0])
            macs_float += macs
    pct = round(100.0 * macs_float / macs_all, 2) if macs_all and macs_known else None
    return FloatLayers(floats, total, pct, attention_float, attention)
