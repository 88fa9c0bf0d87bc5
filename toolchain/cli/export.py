"""vtool export: ExportConfig -> toolchain.export.export_model -> verification table -> --json -> exit 3 on a
failed verification."""

from __future__ import annotations

from pathlib import Path

import typer

from toolchain.cli import app
from toolchain.cli.common import finish, guarded, load_source, outcome, schema_id
from toolchain.cli.options import Data, Json, Overwrite, model_options, output_options
from toolchain.models.config import ModelOptions

MODEL_HELP = "Registry name, checkpoint, run dir, path/file.py:Class or HF dir (an eager PyTorch model)."


@app.command("export")
@guarded
@output_options
@model_options
def export_cmd(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    format: str = typer.Option(..., "--format", "-f", help="onnx, pt2 or torchscript."),
    opset: int = typer.Option(None, "--opset", help="ONNX opset [default: 18; dynamo 18-23, legacy 13-20]."),
    out: Path = typer.Option(None, "--out", "-o", help="Artifact dir [default: exported/<model>-<format>]."),
    static_batch: bool = typer.Option(False, "--static-batch", help="Bake a batch of 1 in (default: dynamic)."),
    exporter: str = typer.Option(None, "--exporter", help="ONNX exporter: dynamo (default) or legacy (fallback)."),
    simplify: bool = typer.Option(False, "--simplify", help="ONNX: run the onnxscript optimizer after export."),
    freeze: bool = typer.Option(False, "--freeze", help="TorchScript: torch.jit.freeze the traced module."),
    data: Data = None,
    atol: float = typer.Option(1e-4, "--atol", help="Max abs logit difference allowed vs the eager model."),
    min_agreement: float = typer.Option(1.0, "--min-agreement", help="Min top-1 agreement with the eager model."),
    samples: int = typer.Option(64, "--samples", help="Real images used to verify the export."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the artifact against the eager model."),
    overwrite: Overwrite = False,
    json_path: Json = None,
    options: ModelOptions | None = None,
) -> None:
    """Export a PyTorch model to ONNX, torch.export (.pt2) or TorchScript, then verify it on real images."""
    from toolchain.export import ExportConfig, export_model
    from toolchain.report.tables import export_view

    config = ExportConfig(format=format, opset=opset, out=out, dynamic_batch=not static_batch, exporter=exporter,
                          simplify=simplify, freeze=freeze, data=data, verify=verify, atol=atol,
                          min_agreement=min_agreement, verify_samples=samples, overwrite=overwrite)
    loaded = load_source(model, options=options, data=data)
    result = outcome(lambda: export_model(loaded, config))
    finish(result, export_view(result), json_path, schema=schema_id("export"))
