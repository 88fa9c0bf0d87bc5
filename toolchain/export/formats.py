"""One writer per format: module + example -> model file on disk, plus what was done (for the manifest).

Exporter failures become an ExportError whose one line names the operator when it can be found.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolchain.errors import ExportError
from toolchain.export.config import ExportConfig
from toolchain.outputs import atomic_write_bytes
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
PROTOBUF_LIMIT = 2 * 1024**3  # ONNX protobuf files cannot exceed 2 GB: weights then go to external data

# Patterns (most specific first) that find the operator an exporter could not handle.
_OP_PATTERNS = (
    r"No ONNX function found for <OpOverload\(op='([\w.:]+)'",
    r"Exporting the operator '([\w.:]+)' to ONNX",
    r"Unsupported operator[: ]+'?([\w.:]+)",
    r"call_function\[target=torch\.ops\.([\w.]+?)(?:\.default)?\]",
    r"torch\.ops\.(aten\.[\w]+)",
    r"(aten::\w+)",
)


def operator_name(exc: BaseException) -> str | None:
    """The operator named by an exporter exception (or its causes), e.g. 'aten.linalg_eig'."""
    seen: set[int] = set()
    current: BaseException | None = exc
    texts = []
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.append(str(current))
        current = current.__cause__ or current.__context__
    for pattern in _OP_PATTERNS:
        for text in texts:
            match = re.search(pattern, text)
            if match:
                return match.group(1).removesuffix(".default")
    return None


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """The first informative line of a (often very long) exporter message, without ANSI colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in lines:
        if "<class '" in line and ("Error" in line or "Exception" in line):
            return line.split(">:", 1)[-1].strip()[:limit]
    return (lines[0] if lines else type(exc).__name__)[:limit]


def export_failure(exc: BaseException, fmt: str, model_name: str, config: ExportConfig) -> ExportError:
    """Turn whatever an exporter raised into a one-line ExportError naming the operator."""
    op = operator_name(exc)
    target = f"ONNX opset {config.opset}" if fmt == "onnx" else fmt
    if op:
        other = "pt2 or torchscript" if fmt == "onnx" else "another format"
        return ExportError(
            f"Cannot export {model_name} to {target}: operator '{op}' is not supported "
            f"({short_reason(exc)}). Replace that op in the model, or export to {other}."
        )
    reason = short_reason(exc)
    hint = "check the model's forward() for data-dependent Python control flow"
    if re.search(r"[Cc]onstraints? violated|specializ|guard", str(exc)) and config.dynamic_batch:
        hint = "the model does not support a dynamic batch; try --static-batch"
    reason = reason.rstrip(". ")
    return ExportError(f"Cannot export {model_name} to {target}: {type(exc).__name__}: {reason}. Hint: {hint}.")


def _batch_dim() -> Any:
    import torch

    return torch.export.Dim("batch", min=1)


def parameter_bytes(module: Any) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def save_serialized(save: Callable[[Any], None], path: Path, what: str) -> None:
    """Serialise into memory, then write the bytes through vtool's checked writer: torch's own file writers
    abort the whole process on a full disk (a C++ exception thrown in a destructor) and leave a 0-byte file."""
    import io

    buffer = io.BytesIO()
    save(buffer)
    data = buffer.getvalue()
    if not data:
        raise ExportError(f"{what} produced an empty file for {path.name}; nothing was written. Re-run the export; "
                          "if it persists, try another --format.")
    atomic_write_bytes(path, data)


# ---------------------------------------------------------------- ONNX


def write_onnx(module: Any, example: Any, path: Path, spec: ModelSpec, config: ExportConfig) -> dict[str, Any]:
    import torch

    large = parameter_bytes(module) > PROTOBUF_LIMIT * 0.9
    details: dict[str, Any] = {"exporter": config.exporter, "opset": config.opset, "external_data": large,
                               "input_name": INPUT_NAME, "output_name": OUTPUT_NAME}
    if config.exporter == "dynamo":
        shapes = ({0: _batch_dim()},) if config.dynamic_batch else None
        program = torch.onnx.export(
            module, (example,), None, dynamo=True, opset_version=config.opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes=shapes, external_data=large, verbose=False,
        )
        program.save(str(path), external_data=large)
    else:
        log.warning("using the legacy TorchScript-based ONNX exporter (deprecated upstream); prefer the default "
                    "dynamo exporter unless it fails for this model")
        axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if config.dynamic_batch else None
        torch.onnx.export(
            module, (example,), str(path), dynamo=False, opset_version=config.opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True,
        )
        details["legacy_exporter_deprecated"] = True
    if config.simplify:
        details["simplify"] = simplify_onnx(path, large)
    details.update(check_onnx(path, config.opset))
    batch_dim = details["input_shape"][0] if details["input_shape"] else None
    if config.dynamic_batch and isinstance(batch_dim, int):
        # The dynamo exporter quietly drops dynamic shapes it cannot honour and bakes the example batch in.
        raise ExportError(
            f"The model does not support a dynamic batch: the ONNX exporter fixed the batch at {batch_dim}. "
            "Export with --static-batch (batch 1), or remove batch-size-dependent code from forward()."
        )
    return details


def simplify_onnx(path: Path, external: bool) -> dict[str, Any]:
    """Constant folding + dead-node removal with onnxscript's optimizer (the dynamo exporter's own pass)."""
    import onnx
    import onnxscript.optimizer

    model = onnx.load(str(path))
    before = len(model.graph.node)
    optimized = onnxscript.optimizer.optimize(model)
    onnx.save(optimized, str(path), save_as_external_data=external)
    after = len(optimized.graph.node)
    log.info("simplified ONNX graph: %d -> %d nodes", before, after)
    return {"tool": "onnxscript.optimizer.optimize", "nodes_before": before, "nodes_after": after}


def check_onnx(path: Path, opset: int | None) -> dict[str, Any]:
    """onnx.checker (full) + shape inference; the opset actually written must be the one asked for."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
        onnx.shape_inference.infer_shapes_path(str(path), str(path), check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"The exported ONNX file fails onnx.checker ({short_reason(exc)}).") from None
    model = onnx.load(str(path), load_external_data=False)
    written = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and written != opset:
        raise ExportError(
            f"Asked for ONNX opset {opset} but the exporter wrote opset {written}; use --opset {written}."
        )

    def dims(value: Any) -> list[Any]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return {
        "checker": "passed",
        "shape_inference": "passed",
        "opset_written": written,
        "nodes": len(model.graph.node),
        "input_shape": dims(model.graph.input[0]),
        "output_shape": dims(model.graph.output[0]),
    }


# ---------------------------------------------------------------- torch.export (.pt2)


def write_pt2(module: Any, example: Any, path: Path, spec: ModelSpec, config: ExportConfig) -> dict[str, Any]:
    import torch

    shapes = ({0: _batch_dim()},) if config.dynamic_batch else None
    program = torch.export.export(module, (example,), dynamic_shapes=shapes)
    save_serialized(lambda buffer: torch.export.save(program, buffer), path, "torch.export.save")
    return {"exporter": "torch.export.export", "strict": False, "nodes": len(program.graph.nodes)}


# ---------------------------------------------------------------- TorchScript


def write_torchscript(module: Any, example: Any, path: Path, spec: ModelSpec, config: ExportConfig) -> dict[str, Any]:
    import torch

    log.warning("TorchScript is deprecated upstream (PyTorch recommends torch.export / .pt2); exporting anyway")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # strict=False lets models that return dicts/tuples internally (transformers ViT) be traced.
        traced = torch.jit.trace(module, example, strict=False, check_trace=False)
        if config.freeze:
            traced = torch.jit.freeze(traced.eval())
    tracer_warnings = sorted({str(w.message).splitlines()[0][:160] for w in caught
                              if w.category.__name__ == "TracerWarning"})
    for message in tracer_warnings:
        log.debug("tracer warning: %s", message)
    save_serialized(lambda buffer: torch.jit.save(traced, buffer), path, "torch.jit.save")
    return {
        "exporter": "torch.jit.trace",
        "strict": False,
        "frozen": config.freeze,
        "torchscript_deprecated": True,
        "tracer_warnings": tracer_warnings,
    }


Writer = Callable[[Any, Any, Path, ModelSpec, ExportConfig], dict[str, Any]]
WRITERS: dict[str, Writer] = {"onnx": write_onnx, "pt2": write_pt2, "torchscript": write_torchscript}
