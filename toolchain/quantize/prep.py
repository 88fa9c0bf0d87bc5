"""The fp32 ONNX graph before quantization: ORT's pre-processing, and checks on what the graph already is."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from toolchain.errors import UserInputError
from toolchain.quantize.graph import QUANT_OPS

log = logging.getLogger(__name__)



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
