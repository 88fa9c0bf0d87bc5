"""quantize(model, data, config) -> QuantResult: the INT8 / fp16 stage, one artifact per call.

Flow: refuse already-quantized or untrainable-for-QAT sources -> resolve calibration and held-out
data -> fp32 ONNX (exported through toolchain.export when given a PyTorch model) -> quantize
(vtool's static PTQ steps on ONNX, torchao PT2E PTQ/QAT, ORT dynamic, fp16) -> judge against the
budget on held-out data (the speed-weighing float fallback for static PTQ) -> speed ratio -> atomic
artifact with a full manifest. This module holds the pieces the modes share.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.artifact import Artifact, is_artifact_dir
from toolchain.errors import ThresholdError, UserInputError
from toolchain.models import LoadedModel
from toolchain.quantize import prep
from toolchain.quantize.calib import QuantData
from toolchain.quantize.config import HardwareProfile, QuantConfig

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("exported")


@dataclass
class QuantResult:
    """The written artifact (None when the budget was missed), what was measured and what was tried."""

    artifact: Artifact | None
    summary: dict[str, Any]
    attempts: list[dict[str, Any]] = field(default_factory=list)
    failure: str = ""  # the one-line reason when the budget was missed

    @property
    def passed(self) -> bool:
        return bool(self.summary.get("passed"))

    def __bool__(self) -> bool:
        return self.passed

    def message(self) -> str:
        return self.failure if not self.passed else f"quantized to {self.path}"

    @property
    def path(self) -> Path | None:
        return self.artifact.path if self.artifact else None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, **self.summary, "attempts": self.attempts}


class QuantBudgetError(ThresholdError):
    """The accuracy budget was missed after every fallback step (exit code 3); carries the result."""

    def __init__(self, message: str, result: QuantResult) -> None:
        super().__init__(message)
        self.result = result


# ------------------------------------------------------------------ checks


def source_precision(model: LoadedModel) -> str | None:
    """'int8'/'fp16' when the source is already quantized (manifest or graph), else None."""
    if model.artifact is None:
        return None
    if model.artifact.manifest.precision in ("int8", "fp16"):
        return model.artifact.manifest.precision
    if model.artifact.format == "onnx":
        ops = prep.quantized_ops(model.artifact.model_path)
        if ops:
            return f"int8 ({', '.join(ops[:3])})"
        if prep.float16_tensors(model.artifact.model_path):
            return "fp16"
    return None


def check_source(model: LoadedModel, config: QuantConfig) -> None:
    precision = source_precision(model)
    if precision:
        raise UserInputError(
            f"'{model.name}' is already quantized ({precision}); quantize the fp32 model it came from "
            "(its checkpoint or fp32 ONNX artifact)."
        )
    onnx_qat = config.mode == "qat" and config.qat().may_start_from_ptq(config.engine)  # decided once data is known
    trainable_needed = (config.mode == "qat" and not onnx_qat) or config.engine in ("torchao", "xnnpack")
    if trainable_needed and not model.is_torch:
        what = ("torchao QAT fine-tunes PyTorch weights (an ONNX file can take --qat-start ptq)"
                if config.mode == "qat" else f"--engine {config.engine} quantizes a PyTorch graph")
        raise UserInputError(
            f"--mode {config.mode} cannot use '{model.name}' ({model.artifact.format if model.artifact else '?'} "
            f"file without its checkpoint): {what}; pass the training checkpoint (runs/NAME) or a registry name."
        )
    if model.artifact is not None and model.artifact.format != "onnx":
        raise UserInputError(
            f"'{model.name}' is a {model.artifact.format} artifact; ONNX Runtime quantization needs an fp32 ONNX "
            "model or a PyTorch checkpoint. Export it with `vtool export --format onnx` first."
        )


def check_qat_source(model: LoadedModel, from_ptq: bool) -> None:
    """An ONNX file can only take QAT from PTQ (distillation): torchao's QAT needs the PyTorch module."""
    if not from_ptq and not model.is_torch:
        raise UserInputError(f"--mode qat on '{model.name}' (an ONNX file) can only distil from it, and this data has "
                             "labels: add --distill on (or --qat-start ptq), or pass the training checkpoint.")


def default_out(model: LoadedModel, config: QuantConfig) -> Path:
    stem = model.name if model.artifact is not None else (
        model.checkpoint.parent.name if model.checkpoint is not None else model.spec.architecture)
    suffix = {"ptq": "int8", "qat": "qat-int8", "dynamic": "dynamic-int8", "fp16": "fp16"}[config.mode]
    return DEFAULT_ROOT / f"{stem}-{suffix}{'-pte' if config.engine == 'xnnpack' else ''}"


# ------------------------------------------------------------------ fp32 ONNX


def fp32_onnx(model: LoadedModel, workdir: Path, data: str | None) -> tuple[Path, dict[str, Any]]:
    """The fp32 ONNX to quantize: the artifact's file, or an export of the PyTorch model (toolchain.export)."""
    if model.artifact is not None:
        return model.artifact.model_path, {"fp32_onnx": str(model.artifact.model_path)}
    from toolchain.export import ExportConfig, export_model

    out = workdir / "fp32-onnx"
    log.info("exporting %s to fp32 ONNX first", model.name)
    result = export_model(model, ExportConfig(format="onnx", out=out, data=data, verify_samples=16))
    return result.artifact.model_path, {"fp32_onnx": "exported by toolchain.export (dynamo, dynamic batch)",
                                       "export": result.artifact.manifest.export}


# ------------------------------------------------------------------ the stage


def _check_dest(dest: Path) -> None:
    if dest.exists() and not is_artifact_dir(dest) and (not dest.is_dir() or any(dest.iterdir())):
        raise UserInputError(
            f"--out '{dest}' exists and is not an artifact directory; quantize only replaces artifacts. "
            "Choose a new or empty --out."
        )


def _data_name(data: Any, qdata: QuantData) -> str | None:
    """The --data that verifies the fp32 export: only data whose labels fit the model (a foreign-class or
    unlabelled folder calibrates, but export verification would refuse it; it then uses its own default)."""
    if isinstance(data, str):
        return data if qdata.labeled else None
    return None if qdata.bundle is None or data is not None else qdata.bundle.config.source


def _explain_speed(ratio: float | None, hardware: HardwareProfile, float_nodes: int, mode: str) -> list[str]:
    notes: list[str] = []
    if mode == "fp16":
        notes.append("fp16 targets GPUs; ONNX Runtime's CPU provider runs most fp16 ops through casts (slower).")
    if ratio is not None and ratio < 1.2 and mode != "fp16":
        if hardware.target in ("avx2", "avx512", "generic"):
            notes.append(f"{hardware.target} has no VNNI: u8*s8 products go through vpmaddubsw + int16 sums, so "
                         "INT8 GEMMs gain little over fp32 FMA (and S8S8 would be slower still).")
        if float_nodes:
            notes.append(f"{float_nodes} layer(s) kept in float add Quantize/Dequantize round trips around them.")
        notes.append("small models are dominated by per-op overhead and unfused QDQ pairs (Q/DQ around "
                     "non-fusable ops), which INT8 does not shrink.")
    return notes
