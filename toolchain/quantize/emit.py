"""Write the INT8 QDQ model: ONNX Runtime's QDQ quantizer places the nodes, vtool supplies the numbers.

ORT's `quantize_static` knows which Q/DQ pattern each op needs for ORT's and OpenVINO's INT8
kernels (Relu/Clip folded into the producer's quantization, int32 biases, Add/Concat handling).
vtool feeds it its own activation ranges through ORT's calibration cache (so ORT's calibrator never
runs) and afterwards replaces each weight's integer tensor and scale by the reconstructed ones
(gptq.py), re-quantizing the int32 bias on the new scale.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntWeight:
    """A weight as integers and per-output-channel scales, shaped like the fp32 weight."""

    values: np.ndarray
    scales: np.ndarray


def write_ranges(ranges: dict[str, tuple[float, float]], path: Path) -> Path:
    """ORT's calibration cache (MinMax) holding vtool's ranges."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, save_tensors_data

    data = {name: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for name, (lo, hi) in ranges.items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)
    return path


def quantize_qdq(fp32: Path, out: Path, ranges_cache: Path, *, per_channel: bool, reduce_range: bool,
                 activation_type: str, weight_type: str, exclude: list[str], op_types: list[str] | None) -> Path:
    """ORT static QDQ quantization driven by a ranges cache (no calibration data read here)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    try:
        quantize_static(str(fp32), str(out), None, quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                        per_channel=per_channel, reduce_range=reduce_range,
                        activation_type=qtype[activation_type], weight_type=qtype[weight_type],
                        nodes_to_exclude=list(exclude), calibrate_method=CalibrationMethod.MinMax,
                        calibration_cache_path=str(ranges_cache),
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": activation_type == "int8"})
    except (ValueError, KeyError) as exc:
        raise UserInputError(f"ONNX Runtime could not quantize this graph ({str(exc)[:200]}).") from None
    return out


def fp32_name(name: str, suffix: str = "_quantized") -> str:
    """The fp32 initializer an ORT quantized initializer was made from (vtool keys weights and biases by it)."""
    return name[: -len(suffix)] if name.endswith(suffix) else name


def patch_weights(qdq: Path, out: Path, weights: dict[str, IntWeight], biases: dict[str, np.ndarray]) -> int:
    """Put vtool's integers and scales into ORT's QDQ model (keyed by fp32 weight name); returns how many."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(qdq))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}

    def array(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name])

    def put(name: str, value: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(value, name))

    patched = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        wdq = producer.get(node.input[1])
        if wdq is None or wdq.op_type != "DequantizeLinear" or wdq.input[0] not in inits:
            continue
        key = fp32_name(wdq.input[0])
        if key not in weights:
            continue
        new = weights[key]
        old = array(wdq.input[0])
        old_scale = array(wdq.input[1])
        if old_scale.size not in (1, new.scales.size):
            log.debug("%s: ORT chose %d scales, vtool has %d; keeping ORT's", key, old_scale.size, new.scales.size)
            continue
        xdq = producer.get(node.input[0])
        bdq = producer.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        has_bias = bdq is not None and bdq.op_type == "DequantizeLinear" and xdq is not None and \
            xdq.op_type == "DequantizeLinear" and fp32_name(bdq.input[0]) in biases
        values, scales = new.values, new.scales
        if has_bias:
            x_scale = float(array(xdq.input[1]).reshape(-1)[0])
            values, scales = _fit_bias(node, values, scales, biases[fp32_name(bdq.input[0])], x_scale)
        put(wdq.input[0], values.astype(old.dtype).reshape(old.shape))
        put(wdq.input[1], scales.astype(np.float32)[: old_scale.size].reshape(old_scale.shape))
        patched += 1
        if has_bias:
            scale = (x_scale * scales).astype(np.float32)
            bias = biases[fp32_name(bdq.input[0])]
            put(bdq.input[0], np.round(bias / scale).astype(np.int32))
            put(bdq.input[1], scale[: array(bdq.input[1]).size].reshape(array(bdq.input[1]).shape))
    onnx.save(model, str(out))
    return patched


def _channel_axis(node: Any) -> int:
    """Axis of the output channels in the weight: 0 for Conv and Gemm(transB), 1 for MatMul/Gemm (K, N)."""
    if node.op_type == "Conv":
        return 0
    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
    return 0 if node.op_type == "Gemm" and trans_b else 1


def _fit_bias(node: Any, values: np.ndarray, scales: np.ndarray, bias: np.ndarray,
              x_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Widen the scale of channels whose int32 bias (bias / (x_scale * w_scale)) would overflow, as ORT does.

    Such channels have tiny weights next to a large bias (BatchNorm-folded, nearly dead); their weights
    are re-rounded on the wider scale.
    """
    limit = (2 ** 31 - 1) * 0.99
    needed = np.abs(bias) / (x_scale * limit)
    wide = needed > scales
    if not np.any(wide):
        return values, scales
    axis = _channel_axis(node)
    moved = np.moveaxis(values.astype(np.float64), axis, 0).reshape(len(scales), -1)
    new_scales = np.where(wide, needed, scales)
    qmax = np.abs(moved).max() or 127
    requantized = np.clip(np.round(moved * (scales / new_scales)[:, None]), -qmax, qmax)
    shaped = np.moveaxis(requantized.reshape(np.moveaxis(values, axis, 0).shape), 0, axis)
    log.debug("%s: widened %d channel scales so the int32 bias fits", node.name, int(wide.sum()))
    return shaped, new_scales


def float_layers(path: Path) -> dict[str, list[str]]:
    """Weighted nodes of a QDQ model split into quantized (weight from DequantizeLinear) and float ones."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    result: dict[str, list[str]] = {"quantized": [], "float": []}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        if producer.get(node.input[1]) == "DequantizeLinear":
            result["quantized"].append(node.name)
        elif node.input[1] in inits:
            result["float"].append(node.name)
    return result


def describe_model(path: Path) -> dict[str, Any]:
    counts = float_layers(path)
    return {"quantized_layers": len(counts["quantized"]), "float_layers": len(counts["float"])}
