"""ORT dynamic INT8 (weights only, activations quantized at run time) and fp16 conversion.

Dynamic quantization suits Linear-heavy models (ViT): by default only MatMul/Gemm are quantized;
on this kind of CPU dynamic Conv (ConvInteger) is slower than fp32. fp16 is for GPU deployment:
ONNX Runtime's CPU provider has few fp16 kernels, so on a CPU it is usually slower than fp32.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from toolchain.errors import MissingDependencyError

log = logging.getLogger(__name__)

DYNAMIC_OP_TYPES = ["MatMul", "Gemm"]
FUSED_OP_TYPES = ["MatMul", "Gemm", "Attention"]  # after fusion.py: Attention -> QAttention


def quantize_dynamic(src: Path, dst: Path, per_channel: bool, reduce_range: bool, weight_type: str,
                     nodes_to_exclude: list[str] | None = None, op_types: list[str] | None = None) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[weight_type]
    src = _without_value_info(src, dst.with_name(f"{dst.stem}-noinfo.onnx"))
    op_types = list(op_types or DYNAMIC_OP_TYPES)
    # Contrib ops (Attention, SkipLayerNormalization) have no ONNX shape inference: their outputs' type is float.
    ort_quantize_dynamic(str(src), str(dst), op_types_to_quantize=op_types, per_channel=per_channel,
                         reduce_range=reduce_range, weight_type=qtype, nodes_to_exclude=list(nodes_to_exclude or []),
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return {"method": "onnxruntime quantize_dynamic", "op_types_to_quantize": op_types,
            "per_channel": per_channel, "reduce_range": reduce_range, "weight_type": weight_type,
            "activations": "uint8, quantized at run time (DynamicQuantizeLinear)"}


def _without_value_info(src: Path, dst: Path) -> Path:
    """Drop the exporter's intermediate shape annotations: ORT re-infers them, and stale ones (seen with the
    dynamo exporter on small ViTs) make onnx shape inference fail inside quantize_dynamic."""
    import onnx

    model = onnx.load(str(src))
    del model.graph.value_info[:]
    onnx.save(model, str(dst))
    return dst


def convert_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """fp16 weights and compute with fp32 inputs/outputs (onnxruntime.transformers.float16)."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:  # pragma: no cover - ships with onnxruntime
        raise MissingDependencyError(
            "fp16 conversion needs onnxruntime.transformers.float16 (part of the onnxruntime wheel); "
            "reinstall onnxruntime."
        ) from exc
    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(dst))
    return {"method": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": True,
            "note": "fp16 targets GPUs (CUDA/TensorRT); ONNX Runtime's CPU provider has few fp16 kernels"}
