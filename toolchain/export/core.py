"""export_model(): eager model -> verified artifact directory, written atomically.

The model file and manifest are built and verified in a hidden staging directory beside the
destination (under its lock), then renamed into place (outputs.commit_dir). An existing artifact is
replaced only with `overwrite`. A failed export leaves nothing behind; a failed verification is
written with status "failed" (beside an existing good artifact, never over it) and raises
ExportVerificationError (exit code 3).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.artifact import (
    FORMAT_FILES,
    MANIFEST,
    Artifact,
    Manifest,
    is_artifact_dir,
    library_versions,
    load_artifact,
    record_files,
)
from toolchain.data import photo_crops
from toolchain.errors import ArtifactError, ExportError, ThresholdError, UserInputError, VtoolError
from toolchain.export.config import ExportConfig
from toolchain.export.formats import WRITERS, export_failure
from toolchain.export.ir import write_openvino_from_onnx
from toolchain.export.verify import verify_export
from toolchain.inputs import EvalInputs, data_config_of, evaluation_inputs
from toolchain.models import LoadedModel
from toolchain.outputs import atomic_write_text, check_destination, commit_dir, destination_lock, staging_dir

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("exported")


@dataclass
class ExportResult:
    """The written artifact and what verification measured."""

    artifact: Artifact
    time_s: float
    verification: dict[str, Any] | None
    failure: str = ""  # the one-line reason when verification failed

    @property
    def path(self) -> Path:
        return self.artifact.path

    @property
    def passed(self) -> bool:
        return self.artifact.manifest.status == "ok"

    def __bool__(self) -> bool:
        return self.passed

    def message(self) -> str:
        return self.failure if not self.passed else f"exported {self.path} (verification passed)"

    def to_dict(self) -> dict[str, Any]:
        manifest = self.artifact.manifest
        return {
            "path": str(self.path),
            "format": manifest.format,
            "status": manifest.status,
            "size_mb": round(self.artifact.size_mb, 4),
            "time_s": self.time_s,
            "export": manifest.export,
            "verification": self.verification,
        }


class ExportVerificationError(ThresholdError):
    """Written with status 'failed': it does not match its reference (eager model, or source ONNX for IR); exit 3."""

    def __init__(self, message: str, result: ExportResult) -> None:
        super().__init__(message)
        self.result = result


def model_stem(loaded: LoadedModel) -> str:
    """A file-system-safe name: the training run's folder for checkpoints, else the architecture."""
    if loaded.checkpoint is not None:
        ckpt = Path(loaded.checkpoint)
        name = ckpt.parent.name if ckpt.name == "best.pt" and ckpt.parent.name else ckpt.stem
    else:
        name = loaded.spec.architecture
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "model"


def default_out_dir(loaded: LoadedModel, fmt: str) -> Path:
    return DEFAULT_ROOT / f"{model_stem(loaded)}-{fmt}"


def source_record(loaded: LoadedModel, inputs: EvalInputs | None, config: ExportConfig) -> dict[str, Any]:
    """Where the model came from, and which data validates it (copied from the checkpoint when recorded)."""
    record = loaded.describe()
    data_config = loaded.info.get("data_config")
    if data_config is None and config.data is not None and inputs is not None and inputs.bundle is not None:
        from dataclasses import asdict

        data_config = asdict(inputs.bundle.config)
    if data_config is not None:
        record["data_config"] = data_config
    for key in ("data", "metrics", "split", "options", "pretrained"):  # the split is reused downstream
        if key in loaded.info:
            record[key] = loaded.info[key]
    return record


def _is_good_artifact(path: Path) -> bool:
    try:
        return load_artifact(path).manifest.status == "ok"
    except ArtifactError:
        return False


def _example_input(loaded: LoadedModel, inputs: EvalInputs | None, batch: int) -> Any:
    """A real image batch when one is at hand (keeps data-dependent ops honest), else seeded noise."""
    import torch

    if inputs is not None and len(inputs.x) >= batch:
        return torch.from_numpy(inputs.x[:batch].copy())
    generator = torch.Generator().manual_seed(0)
    return torch.randn(loaded.spec.input_shape(batch), generator=generator)


def verification_inputs(loaded: LoadedModel, config: ExportConfig) -> EvalInputs:
    """The model's validation images; with no data known, crops of the bundled real photos.

    Verification compares logits (eager vs exported), so labels are not needed: any real images will do.
    """
    if config.data is None and data_config_of(loaded) is None:
        count = config.verify_samples
        log.info("no data recorded for %s: verifying on %d crops of the bundled photos", loaded.name, count)
        return EvalInputs(photo_crops(loaded.spec, count), None,
                          {"source": "bundled-photos (scikit-image)", "crops": count, "n": count})
    return evaluation_inputs(loaded, config.data, part="val", limit=config.verify_samples)


def export_model(loaded: LoadedModel | str, config: ExportConfig) -> ExportResult:
    """Export an eager model (a LoadedModel or a --model source) to config.format, verify it, and write the
    artifact directory atomically. An existing artifact at --out is replaced only with config.overwrite; a failed
    verification raises ExportVerificationError carrying the result."""
    from toolchain.sources import as_loaded

    loaded = as_loaded(loaded)
    # OpenVINO IR can also be made from an ONNX artifact (fp32 or an INT8 QDQ model of `vtool quantize`).
    onnx_source = config.format == "openvino" and loaded.artifact is not None and loaded.artifact.format == "onnx"
    if not loaded.is_torch and not onnx_source:
        raise UserInputError(
            f"'{loaded.name}' is already a {loaded.artifact.format if loaded.artifact else 'non-torch'} artifact; "
            "export needs a PyTorch model: a registry name, a training checkpoint or file.py:Class "
            "(--format openvino also takes an ONNX artifact)."
        )
    dest = Path(config.out) if config.out is not None else default_out_dir(loaded, config.format)
    check_destination(dest, sources=(loaded.checkpoint,), overwrite=config.overwrite, replaceable=is_artifact_dir)
    with destination_lock(dest):  # a second export to the same --out fails at once instead of racing this one
        return _export(loaded, config, dest)


def _export(loaded: LoadedModel, config: ExportConfig, dest: Path) -> ExportResult:
    import torch

    onnx_source = not loaded.is_torch  # export_model let only an ONNX artifact bound for OpenVINO through

    # Resolve the verification images first: bad --data fails before anything is exported or written.
    inputs = verification_inputs(loaded, config) if config.verify else None
    module = loaded.module.eval() if loaded.is_torch else None
    fmt = config.format
    manifest = Manifest(format=fmt, model_file=FORMAT_FILES[fmt], spec=loaded.spec.to_dict(),
                        source=source_record(loaded, inputs, config))
    if onnx_source:
        manifest.precision = loaded.artifact.manifest.precision
        manifest.quantization = loaded.artifact.manifest.quantization
    staging = staging_dir(dest, "build")
    try:
        log.info("exporting %s to %s (%s)", loaded.name, fmt, dest)
        example = _example_input(loaded, inputs, config.example_batch)
        start = time.perf_counter()
        try:
            with torch.no_grad():
                if onnx_source:
                    details = write_openvino_from_onnx(loaded.artifact.model_path, staging / manifest.model_file,
                                                       loaded.spec, config)
                else:
                    details = WRITERS[fmt](module, example, staging / manifest.model_file, loaded.spec, config)
        except VtoolError:
            raise
        except OSError as exc:
            if exc.errno is None:  # an exporter's own failure, not the disk's
                raise export_failure(exc, fmt, loaded.name, config) from exc
            # a full disk, a read-only file system...: the CLI names --out and what to do
            raise OSError(exc.errno, exc.strerror, str(dest)) from None
        except Exception as exc:  # exporters raise many types; each becomes one line naming the op
            raise export_failure(exc, fmt, loaded.name, config) from exc
        export_time = round(time.perf_counter() - start, 3)
        manifest.export = {
            "format": fmt,
            "dynamic_batch": config.dynamic_batch,
            "example_batch": config.example_batch,
            "simplified": bool(details.get("simplify")),
            "time_s": export_time,
            "torchscript_deprecated": fmt == "torchscript",
            **details,
        }
        manifest.versions = library_versions()
        log.info("exported in %.2f s", export_time)
        if inputs is not None:
            try:
                verification = verify_export(loaded, Artifact(staging, manifest), inputs, config)
            except ArtifactError as exc:  # the exporter wrote a file its own runtime cannot load
                raise ExportError(f"The exported {fmt} model does not load for verification: {exc}") from None
            manifest.verification = verification
            manifest.status = "ok" if verification["passed"] else "failed"
        else:
            manifest.verification = {"skipped": True, "summary": "verification was turned off"}
        target, overwrite = dest, config.overwrite
        if manifest.status == "failed" and _is_good_artifact(dest):
            target, overwrite = dest.with_name(f"{dest.name}.failed"), True  # beside the good one, never over it
        record_files(manifest, staging)
        atomic_write_text(staging / MANIFEST, manifest.to_json())
        commit_dir(staging, target, overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = ExportResult(load_artifact(target), export_time, manifest.verification)
    if manifest.status == "failed":
        kept = f" (the good artifact at {dest} was kept)" if target != dest else ""
        reference = manifest.verification.get("reference") or "the eager model"
        result.failure = (f"Export of {loaded.name} to {fmt} does not match its reference ({reference}): "
                          f"{manifest.verification['summary']}. Written with status 'failed' to {target}{kept}; "
                          "later stages refuse it.")
        raise ExportVerificationError(result.failure, result)
    return result
