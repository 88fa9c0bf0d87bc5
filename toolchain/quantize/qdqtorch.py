"""An INT8 QDQ ONNX graph as a differentiable torch module, for QAT that starts from vtool's PTQ.

Every weight that ONNX Runtime's QDQ model stores as integers behind a DequantizeLinear becomes a
float parameter, fake-quantized per output channel on the PTQ's own scales; every bias becomes a
float parameter; every activation QuantizeLinear -> DequantizeLinear pair becomes fake quantization
on the PTQ's scale and zero point (straight-through gradients; with `learn_ranges` the scale learns).
So the module computes what the INT8 file computes (on EfficientNet-Lite0 30 dB from ONNX Runtime:
float summation order tips a few values sitting on a rounding boundary, and depth amplifies them),
and what QAT learns maps back onto the same file: integers on the same scales, biases, ranges.
Only the ops of CNN classifiers are interpreted; anything else is refused by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserInputError
from toolchain.quantize.config import PAIR_LIMIT, WeightRange
from toolchain.quantize.emit import fp32_name
from toolchain.quantize.graph import node_attrs

WEIGHTED = ("Conv", "Gemm", "MatMul")


def _pads(attrs: dict[str, Any], dims: int) -> tuple[list[int], bool]:
    """ONNX pads [x1_begin, x2_begin, ..., x1_end, x2_end] -> F.pad order; True when symmetric."""
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UserInputError(f"auto_pad={attrs['auto_pad']!r} is not supported by QAT from PTQ; use "
                             "--qat-start observers.")
    pads = list(attrs.get("pads", [0] * 2 * dims))
    begin, end = pads[:dims], pads[dims:]
    flat: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        flat += [b, e]
    return flat, begin == end


def unsupported(op_types: set[str]) -> list[str]:
    """The ops of a graph the torch copy cannot run (checked before PTQ spends minutes on it)."""
    return sorted(op_types - set(OPS) - {"QuantizeLinear", "DequantizeLinear"})


def range_key(q_input: str) -> str:
    """The tensor name vtool's ranges use for a QuantizeLinear input (ORT renames a graph output's producer)."""
    suffix = "_QuantizeLinear_Input"
    return q_input[: -len(suffix)] if q_input.endswith(suffix) else q_input


def quantized_activations(model: Any) -> list[str]:
    """The activations a QDQ model (onnx.ModelProto) quantizes per tensor, by their fp32 names (range keys)."""
    sizes = {i.name: math.prod(i.dims) for i in model.graph.initializer}  # from the dims: no weight is decoded
    return [range_key(n.input[0]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and sizes.get(n.input[1]) == 1]


def pair_clamp(ints: Any, axis: int) -> Any:
    """Integer weights (a torch tensor) with each odd input channel along `axis` cut to PAIR_LIMIT minus its
    even partner's magnitude: config.WeightRange.paired, as gptq.pair_clamp does on weight matrices."""
    import torch

    q = ints.movedim(axis, 0)
    n = q.shape[0] // 2 * 2
    even, odd = q[0:n:2], q[1:n:2]
    room = PAIR_LIMIT - even.abs()
    pairs = torch.stack([even, odd.clamp(min=-room, max=room)], 1).reshape(n, *q.shape[1:])
    return torch.cat([pairs, q[n:]]).movedim(0, axis)


def qdq_module(path: Path, weight_qmax: int | dict[str, WeightRange], learn_ranges: bool = False) -> Any:
    """The QDQ model at `path` as a torch.nn.Module (the class is defined here: torch loads only when QAT runs).

    `weight_qmax`: the largest weight integer for all weights, or a WeightRange per fp32 weight name (others:
    the smallest qmax, unpaired).
    `learn_ranges`: activation scales become parameters too (LSQ, Esser et al. 2020; zero points stay).
    """
    import onnx
    import torch
    import torch.nn.functional as F
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    tensors: dict[str, torch.Tensor] = {}

    def const(name: str) -> torch.Tensor:
        if name not in tensors:
            tensors[name] = torch.from_numpy(np.array(inits[name]))
        return tensors[name]

    def fake_activation(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, low: int, high: int) -> torch.Tensor:
        """Q then DQ with straight-through rounding; differentiable in `scale` as in LSQ."""
        scaled = x / scale + zero
        rounded = scaled + (torch.round(scaled) - scaled).detach()
        return (rounded.clamp(low, high) - zero) * scale

    class Net(torch.nn.Module):
        """The QDQ graph, op by op; `weights`/`biases` are keyed by the fp32 initializer names."""

        def __init__(self) -> None:
            super().__init__()
            self.weights = torch.nn.ParameterDict()
            self.biases = torch.nn.ParameterDict()
            self.weight_scales: dict[str, torch.Tensor] = {}
            self.keys: dict[str, tuple[str, str]] = {}  # DQ output -> ("w"|"b"|"c", key)
            self.consts: dict[str, torch.Tensor] = {}
            self.log_scales = torch.nn.ParameterDict()  # activation scales, by range key (learn_ranges)
            self.zeros: dict[str, int] = {}
            self.signed: dict[str, bool] = {}
            self.input_name = graph.input[0].name
            self.output_name = graph.output[0].name
            self.nodes = list(graph.node)
            self.attrs = [node_attrs(n) for n in self.nodes]
            self.qmax = weight_qmax if isinstance(weight_qmax, int) else min(
                (r.qmax for r in weight_qmax.values()), default=127)
            self.ranges: dict[str, tuple[int, int | None]] = {}  # safe key -> (qmax, pair axis) where named
            self.taps: set[str] = set()  # fp32 activation names whose fake-quantized values forward() keeps
            self.tapped: dict[str, torch.Tensor] = {}
            for node in self.nodes:
                if node.op_type == "DequantizeLinear" and node.input[0] in inits:
                    self._dequantized_constant(node)
                elif node.op_type == "QuantizeLinear" and learn_ranges and inits[node.input[1]].size == 1:
                    key = range_key(node.input[0]).replace(".", "__")
                    scale = float(inits[node.input[1]].reshape(-1)[0])
                    self.log_scales[key] = torch.nn.Parameter(torch.tensor(np.log(scale), dtype=torch.float32))
                    self.zeros[key] = int(inits[node.input[2]].reshape(-1)[0])
                    self.signed[key] = inits[node.input[2]].dtype == np.int8
                elif node.op_type not in OPS and node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                    raise UserInputError(f"QAT from PTQ cannot run ONNX op {node.op_type} ({node.name}); "
                                         "use --qat-start observers (torchao PT2E QAT).")

        def _dequantized_constant(self, node: Any) -> None:
            ints = inits[node.input[0]]
            scale = inits[node.input[1]].astype(np.float32)
            zero = inits[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else 0.0
            axis = int(node_attrs(node).get("axis", 1))
            shape = [1] * ints.ndim
            if scale.size > 1:
                shape[axis] = scale.size
            value = (ints.astype(np.float32) - np.reshape(zero, shape)) * np.reshape(scale, shape)
            key = fp32_name(node.input[0])
            users = consumers.get(node.output[0], [])
            role = "c"
            if users and all(u.op_type in WEIGHTED for u in users):
                slots = {list(u.input).index(node.output[0]) for u in users}
                symmetric = not np.any(zero)
                role = "w" if slots == {1} and ints.dtype == np.int8 and symmetric else "b" if slots == {2} else "c"
            safe = key.replace(".", "__")
            if role == "w":  # in units of its quantization step: one learning rate suits every layer
                self.weights[safe] = torch.nn.Parameter(torch.from_numpy(ints.astype(np.float32)))
                self.weight_scales[safe] = torch.from_numpy(np.reshape(scale, shape).astype(np.float32))
                if isinstance(weight_qmax, dict) and key in weight_qmax:
                    transposed = users[0].op_type == "Conv" or (users[0].op_type == "Gemm"
                                                               and node_attrs(users[0]).get("transB", 0))
                    limits = weight_qmax[key]
                    self.ranges[safe] = (limits.qmax, (1 if transposed else 0) if limits.paired else None)
            elif role == "b":
                self.biases[safe] = torch.nn.Parameter(torch.from_numpy(value))
            else:
                self.consts[node.output[0]] = torch.from_numpy(value)
            self.keys[node.output[0]] = (role, safe)

        def weight(self, safe: str) -> torch.Tensor:
            """Round-to-integer with a straight-through gradient, clamped to +-qmax, times the PTQ's scales."""
            steps = self.weights[safe]
            ints = steps + (torch.round(steps) - steps).detach()
            return self._clamped(safe, ints) * self.weight_scales[safe]

        def _clamped(self, safe: str, ints: torch.Tensor) -> torch.Tensor:
            qmax, axis = self.ranges.get(safe, (self.qmax, None))
            ints = ints.clamp(-qmax, qmax)
            return ints if axis is None else pair_clamp(ints, axis)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            values: dict[str, torch.Tensor] = {self.input_name: x}

            def get(name: str) -> torch.Tensor | None:
                if not name:
                    return None
                if name in values:
                    return values[name]
                if name in self.keys:
                    role, safe = self.keys[name]
                    return self.weight(safe) if role == "w" else self.biases[safe] if role == "b" else self.consts[name]
                return const(name)

            for node, attrs in zip(self.nodes, self.attrs, strict=True):
                if node.op_type == "DequantizeLinear":
                    if node.input[0] in inits:
                        continue  # read through get(): weight, bias or constant
                    values[node.output[0]] = values[node.input[0]]  # the Q before it did the fake quantization
                    continue
                if node.op_type == "QuantizeLinear":
                    info = np.iinfo(inits[node.input[2]].dtype)
                    key = range_key(node.input[0]).replace(".", "__")
                    scale = self.log_scales[key].exp() if key in self.log_scales else const(node.input[1]).float()
                    values[node.output[0]] = fake_activation(values[node.input[0]], scale,
                                                             const(node.input[2]).float(), int(info.min),
                                                             int(info.max))
                    if self.taps and (name := range_key(node.input[0])) in self.taps:
                        self.tapped[name] = values[node.output[0]]
                    continue
                inputs = [get(name) for name in node.input]
                out = OPS[node.op_type](inputs, attrs, F)
                values[node.output[0]] = out
            return values[self.output_name]

        def activation_names(self) -> list[str]:
            """The fp32 tensors quantized per tensor (vtool range keys), in graph order: what taps can name."""
            return quantized_activations(model)

        def integer_weights(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
            """The trained weights as (integers, per-channel scales of the QDQ file), keyed by the fp32 weight name."""
            result = {}
            with torch.no_grad():
                for safe, steps in self.weights.items():
                    ints = self._clamped(safe, torch.round(steps)).numpy().astype(np.int8)
                    result[safe.replace("__", ".")] = (ints, self.weight_scales[safe].numpy().reshape(-1))
            return result

        def activation_ranges(self) -> dict[str, tuple[float, float]]:
            """Learned scales as vtool ranges: (lo, hi) from which ORT derives the same scale and zero point."""
            result = {}
            with torch.no_grad():
                for key, log_scale in self.log_scales.items():
                    scale, zero = float(log_scale.exp()), self.zeros[key]
                    # ORT: scale = (hi - lo) / 255, zero = round(-lo / scale); int8 activations are symmetric
                    signed = self.signed[key]
                    result[key.replace("__", ".")] = ((-127.5 * scale, 127.5 * scale) if signed
                                                      else (-zero * scale, (255 - zero) * scale))
            return result

        def float_biases(self) -> dict[str, np.ndarray]:
            return {safe.replace("__", "."): b.detach().numpy().astype(np.float32) for safe, b in self.biases.items()}

    return Net()


def _conv(inputs: list[Any], attrs: dict[str, Any], F: Any) -> Any:
    x, w, b = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    dims = w.dim() - 2
    pads, symmetric = _pads(attrs, dims)
    strides = attrs.get("strides", [1] * dims)
    dilations = attrs.get("dilations", [1] * dims)
    conv = F.conv2d if dims == 2 else F.conv1d
    if not symmetric:
        x = F.pad(x, pads)
        return conv(x, w, b, strides, 0, dilations, attrs.get("group", 1))
    return conv(x, w, b, strides, pads[::2][::-1], dilations, attrs.get("group", 1))


def _gemm(inputs: list[Any], attrs: dict[str, Any], F: Any) -> Any:
    a, b = inputs[0], inputs[1]
    a = a.t() if attrs.get("transA", 0) else a
    b = b.t() if attrs.get("transB", 0) else b
    out = attrs.get("alpha", 1.0) * (a @ b)
    if len(inputs) > 2 and inputs[2] is not None:
        out = out + attrs.get("beta", 1.0) * inputs[2]
    return out


def _pool(kind: str) -> Callable[[list[Any], dict[str, Any], Any], Any]:
    def run(inputs: list[Any], attrs: dict[str, Any], F: Any) -> Any:
        kernel = attrs["kernel_shape"]
        pads, symmetric = _pads(attrs, len(kernel))
        x = inputs[0]
        strides = attrs.get("strides", [1] * len(kernel))
        ceil = bool(attrs.get("ceil_mode", 0))
        if kind == "max":
            if not symmetric:
                x = F.pad(x, pads, value=float("-inf"))
            return F.max_pool2d(x, kernel, strides, 0 if not symmetric else pads[::2][::-1], ceil_mode=ceil)
        if not symmetric:
            raise UserInputError("asymmetric AveragePool padding is not supported by QAT from PTQ; use "
                                 "--qat-start observers.")
        return F.avg_pool2d(x, kernel, strides, pads[::2][::-1], ceil_mode=ceil,
                            count_include_pad=bool(attrs.get("count_include_pad", 0)))
    return run


def _reshape(inputs: list[Any], attrs: dict[str, Any], F: Any) -> Any:
    x, shape = inputs[0], [int(v) for v in inputs[1].tolist()]
    shape = [x.shape[i] if v == 0 and not attrs.get("allowzero", 0) else v for i, v in enumerate(shape)]
    return x.reshape(shape)


def _clip(inputs: list[Any], attrs: dict[str, Any], F: Any) -> Any:
    low = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("min")
    high = inputs[2] if len(inputs) > 2 and inputs[2] is not None else attrs.get("max")
    low = None if low is None else float(low)
    high = None if high is None else float(high)
    return inputs[0].clamp(low, high)


def _torch() -> Any:
    import torch

    return torch


def _axes(inputs: list[Any], attrs: dict[str, Any]) -> list[int]:
    if len(inputs) > 1 and inputs[1] is not None:
        return [int(v) for v in inputs[1].tolist()]
    return list(attrs.get("axes", []))


def _reduce_mean(inputs: list[Any], attrs: dict[str, Any], F: Any) -> Any:
    axes = _axes(inputs, attrs) or list(range(inputs[0].dim()))
    return inputs[0].mean(dim=axes, keepdim=bool(attrs.get("keepdims", 1)))


def _squeeze(inputs: list[Any], attrs: dict[str, Any], F: Any) -> Any:
    x = inputs[0]
    for axis in sorted((a % x.dim() for a in _axes(inputs, attrs)), reverse=True):
        x = x.squeeze(axis)
    return x


def _unsqueeze(inputs: list[Any], attrs: dict[str, Any], F: Any) -> Any:
    x = inputs[0]
    axes = _axes(inputs, attrs)
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return x


OPS: dict[str, Callable[[list[Any], dict[str, Any], Any], Any]] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda i, a, F: i[0] @ i[1],
    "Relu": lambda i, a, F: F.relu(i[0]),
    "Clip": _clip,
    "Sigmoid": lambda i, a, F: i[0].sigmoid(),
    "HardSigmoid": lambda i, a, F: (i[0] * a.get("alpha", 0.2) + a.get("beta", 0.5)).clamp(0, 1),
    "HardSwish": lambda i, a, F: F.hardswish(i[0]),
    "LeakyRelu": lambda i, a, F: F.leaky_relu(i[0], a.get("alpha", 0.01)),
    "Add": lambda i, a, F: i[0] + i[1],
    "Sub": lambda i, a, F: i[0] - i[1],
    "Mul": lambda i, a, F: i[0] * i[1],
    "Div": lambda i, a, F: i[0] / i[1],
    "GlobalAveragePool": lambda i, a, F: i[0].mean(dim=tuple(range(2, i[0].dim())), keepdim=True),
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "Flatten": lambda i, a, F: i[0].reshape(int(np.prod(i[0].shape[: a.get("axis", 1)])), -1),
    "Reshape": _reshape,
    "Concat": lambda i, a, F: _torch().cat(i, dim=a["axis"]),
    "Transpose": lambda i, a, F: i[0].permute(*a.get("perm", reversed(range(i[0].dim())))),
    "Softmax": lambda i, a, F: i[0].softmax(a.get("axis", -1)),
    "ReduceMean": _reduce_mean,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Identity": lambda i, a, F: i[0],
}
