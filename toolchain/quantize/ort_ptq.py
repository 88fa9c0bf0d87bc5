"""ONNX Runtime static INT8 quantization (QDQ): pre-processing, streamed calibration, op presets.

Calibration runs once per method and is cached (ORT's calibration_cache_path), so the budget
fallback can re-quantize with different nodes kept in float without re-reading the images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserInputError
from toolchain.quantize.calib import HashingBatches, QuantData

log = logging.getLogger(__name__)

QUANT_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
    "DynamicQuantizeLinear", "QLinearAdd", "QGemm", "MatMulNBits",
})
# The ViT preset: only weight-carrying ops are quantized; LayerNorm, Softmax, GELU and residual Adds stay float.
VIT_OP_TYPES = ["MatMul", "Gemm", "Conv"]
TRANSFORMER_OPS = frozenset({"LayerNormalization", "Softmax", "Gelu", "Erf"})


def load_onnx(path: str | Path) -> Any:
    import onnx

    return onnx.load(str(path), load_external_data=False)


def quantized_ops(path: str | Path) -> list[str]:
    """Quantization operators present in an ONNX graph (empty for a float model)."""
    model = load_onnx(path)
    return sorted({n.op_type for n in model.graph.node if n.op_type in QUANT_OPS})


def float16_tensors(path: str | Path) -> bool:
    import onnx

    model = load_onnx(path)
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def looks_like_transformer(path: str | Path) -> bool:
    ops = {n.op_type for n in load_onnx(path).graph.node}
    return bool(ops & TRANSFORMER_OPS) and "MatMul" in ops


def input_name_and_shape(path: str | Path) -> tuple[str, list[Any]]:
    model = load_onnx(path)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UserInputError(f"'{path}' has {len(inputs)} inputs; vtool quantizes image classifiers with one input.")
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def check_input_shape(path: str | Path, expected: tuple[int, ...]) -> None:
    """The ONNX input (C, H, W) must match what the data will be preprocessed to."""
    _, dims = input_name_and_shape(path)
    fixed = dims[1:]
    if len(dims) != 4 or any(isinstance(d, int) and d > 0 and d != e for d, e in zip(fixed, expected, strict=False)):
        raise UserInputError(
            f"'{Path(path).name}' takes input {dims} but the data is preprocessed to "
            f"(N, {', '.join(map(str, expected))}); "
            "pass --input-size/--num-classes for a bare ONNX file or use the model's artifact directory."
        )


def preprocess(src: Path, dst: Path) -> dict[str, Any]:
    """ORT's quant_pre_process (shape inference, graph optimisation, BN folding); retries without symbolic shapes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        return {"pre_process": "quant_pre_process"}
    except Exception as exc:  # noqa: BLE001 - symbolic shape inference fails on some exporter graphs
        log.info("symbolic shape inference failed (%s); pre-processing without it", str(exc)[:120])
    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return {"pre_process": "quant_pre_process(skip_symbolic_shape)"}
    except Exception as exc:  # noqa: BLE001
        log.warning("ORT pre-processing failed (%s); quantizing the exported graph as is", str(exc)[:160])
        import shutil

        shutil.copyfile(src, dst)
        return {"pre_process": "none", "pre_process_error": str(exc)[:200]}


def make_reader(batches: HashingBatches, input_name: str, count: int) -> Any:
    """A CalibrationDataReader that streams one batch at a time.

    It also implements ORT's strided protocol (len + set_range): with CalibStridedMinMax=1 ORT feeds
    the calibrator one batch per collect_data call, so even the histogram calibrators (entropy,
    percentile), which otherwise keep every activation of every image, hold one batch at a time.
    """
    from onnxruntime.quantization import CalibrationDataReader

    class StreamingReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.iterator = iter(batches)
            self.remaining = count

        def __len__(self) -> int:
            return count

        def set_range(self, start_index: int, end_index: int) -> None:
            self.remaining = end_index - start_index

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.remaining <= 0:
                return None
            self.remaining -= 1
            batch = next(self.iterator, None)
            if batch is None:
                raise UserInputError("the calibration set is empty or shorter than expected; check --data.")
            return {input_name: batch}

    return StreamingReader()


@dataclass
class StaticSettings:
    """Everything quantize_static needs besides the nodes kept in float."""

    calibration: str
    per_channel: bool
    reduce_range: bool
    activation_type: str
    weight_type: str
    percentile: float = 99.999
    op_types: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "format": "QDQ", "calibration": self.calibration, "per_channel": self.per_channel,
            "reduce_range": self.reduce_range, "activation_type": self.activation_type,
            "weight_type": self.weight_type, "op_types_to_quantize": self.op_types or "all supported",
            **({"percentile": self.percentile} if self.calibration == "percentile" else {}),
        }


class StaticQuantizer:
    """Quantize one pre-processed fp32 ONNX model many times (different float nodes), calibrating once per method."""

    def __init__(self, fp32: Path, workdir: Path, data: QuantData) -> None:
        self.fp32, self.workdir, self.data = fp32, workdir, data
        self.input_name, _ = input_name_and_shape(fp32)
        self.calibration_info: dict[str, Any] = {}
        self.caches: dict[str, Path] = {}

    def _calibrate_args(self, settings: StaticSettings, more: dict[str, Any]) -> dict[str, Any]:
        from onnxruntime.quantization import CalibrationMethod

        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[settings.calibration]
        extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": settings.activation_type == "int8"}
        if settings.calibration == "percentile":
            extra["CalibPercentile"] = settings.percentile
        extra.update(settings.extra)
        extra.update(more)
        return {"calibrate_method": method, "extra_options": extra}

    def quantize(self, settings: StaticSettings, out: Path, nodes_to_exclude: list[str] | None = None) -> Path:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        key = f"{settings.calibration}-{settings.percentile}-{','.join(settings.op_types or [])}"
        cache = self.caches.setdefault(key, self.workdir / f"calibration-{len(self.caches)}.json")
        reader = None
        batches = None
        extra_stride: dict[str, Any] = {}
        if not cache.is_file():
            batches = HashingBatches(self.data)
            reader = make_reader(batches, self.input_name, self.data.batch_count())
            extra_stride = {"CalibStridedMinMax": 1}
            log.info("calibrating (%s) on up to %s images", settings.calibration,
                     self.data.description.get("calibration", {}).get("n", "?"))
        qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        try:
            quantize_static(
                str(self.fp32), str(out), reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=settings.op_types,
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                activation_type=qtype[settings.activation_type],
                weight_type=qtype[settings.weight_type],
                nodes_to_exclude=list(nodes_to_exclude or []),
                calibration_cache_path=str(cache),
                **self._calibrate_args(settings, extra_stride),
            )
        except ValueError as exc:  # ORT: "No data is collected." when the reader yielded nothing
            if "No data" in str(exc):
                raise UserInputError("the calibration set is empty; give a source with training images.") from None
            raise
        if batches is not None:
            self.calibration_info = batches.finish()
        return out


def quantizable_nodes(path: Path, op_types: list[str] | None) -> list[str]:
    """Names of the nodes that carry weights (Conv/Gemm/MatMul with a constant input): the ones worth ranking."""
    model = load_onnx(path)
    inits = {i.name for i in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    weighted = ("Conv", "Gemm", "MatMul", "ConvTranspose")
    allowed = set(op_types) if op_types else set(weighted)
    return [n.name for n in model.graph.node
            if n.op_type in weighted and n.op_type in allowed and any(i in inits or i in consts for i in n.input[1:])]


def activation_matmuls(path: Path) -> list[str]:
    """MatMul nodes whose inputs are both activations (attention scores): kept float in the ViT preset."""
    model = load_onnx(path)
    inits = {i.name for i in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and not any(i in inits or i in consts for i in n.input)]


def node_count(path: Path) -> dict[str, int]:
    """How many weighted ops ended up quantized (input from DequantizeLinear) vs float."""
    model = load_onnx(path)
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    counts = {"quantized": 0, "float": 0}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            quant = bool(node.input) and producers.get(node.input[0]) == "DequantizeLinear"
            counts["quantized" if quant else "float"] += 1
    return counts


def close_float_islands(path: Path, nodes: list[str]) -> list[str]:
    """Add, for each node kept in float, the weighted node feeding it through a Relu/Clip.

    ORT's QDQ quantizer folds a Relu/Clip into the QuantizeLinear of its producer's output. When
    the consumer of that activation is kept in float no QuantizeLinear is emitted there, and the
    folded activation can be lost (measured on EfficientNet-Lite0: one depthwise conv kept float
    alone dropped agreement from 0.945 to 0.60; with the conv feeding it, 0.94). Keeping the
    producer in float too keeps the Relu/Clip between two float nodes.
    """
    model = load_onnx(path)
    producer = {o: n for n in model.graph.node for o in n.output}
    result = list(nodes)
    for name in nodes:
        node = next((n for n in model.graph.node if n.name == name), None)
        if node is None or not node.input:
            continue
        act = producer.get(node.input[0])
        if act is not None and act.op_type in ("Relu", "Clip") and act.input:
            source = producer.get(act.input[0])
            if source is not None and source.op_type in ("Conv", "Gemm", "MatMul") and source.name not in result:
                result.append(source.name)
    return result
