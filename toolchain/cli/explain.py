"""vtool explain: ExplainConfig -> toolchain.explain.explain -> table + PNG overlays -> --json."""

from __future__ import annotations

from pathlib import Path

import typer

from toolchain.cli import app
from toolchain.cli.common import finish, guarded, load_source, schema_id
from toolchain.cli.options import Device, Json, Model, ModelArg, Runner, model_options, output_options
from toolchain.models.config import ModelOptions


@app.command("explain")
@guarded
@output_options
@model_options
def explain_cmd(
    model_arg: ModelArg = None,
    model: Model = None,
    image: list[Path] = typer.Option(None, "--image", "-i", help="An image file (repeatable)."),
    folder: Path = typer.Option(None, "--dir", help="Explain every image under this folder."),
    method: str = typer.Option("auto", "--method", help="auto (gradcam for torch models, occlusion for exported "
                               "ones), gradcam, gradcam++ or occlusion (forward-only: any artifact)."),
    target_class: str = typer.Option(None, "--target-class", help="Class index or name to explain "
                                     "[default: each image's top-1]."),
    target_layer: str = typer.Option(None, "--target-layer", help="Layer Grad-CAM reads [default: the last conv "
                                     "block; for a ViT the last block's first norm]."),
    window: int = typer.Option(None, "--window", help="Occlusion window in input pixels [default: side/4]."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="Labels shown per image."),
    out: Path = typer.Option(Path("explain"), "--out", "-o", help="Directory for the PNG overlays."),
    backend: Runner = "auto",
    device: Device = "cpu",
    json_path: Json = None,
    options: ModelOptions | None = None,
) -> None:
    """Heatmaps of what the model looked at (Grad-CAM, Grad-CAM++, occlusion), as PNG overlays with the top-k."""
    from toolchain.explain import ExplainConfig, explain
    from toolchain.predict import collect_images
    from toolchain.report.tables import explain_view

    config = ExplainConfig(method=method, target_class=target_class, top_k=top_k, target_layer=target_layer,
                           window=window, runner=backend, device=device, out=out)
    paths = collect_images(image, folder)
    loaded = load_source(model, model_arg, options)
    result = explain(loaded, paths, config)
    finish(result, explain_view(result), json_path, schema=schema_id("explain"))
