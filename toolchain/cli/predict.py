"""vtool predict: PredictConfig -> toolchain.predict.predict -> table -> --json."""

from __future__ import annotations

from pathlib import Path

import typer

from toolchain.cli import app
from toolchain.cli.common import finish, guarded, load_source, schema_id
from toolchain.cli.options import Device, Json, Model, ModelArg, Runner, model_options, output_options
from toolchain.models.config import ModelOptions


@app.command("predict")
@guarded
@output_options
@model_options
def predict_cmd(
    model_arg: ModelArg = None,
    model: Model = None,
    image: list[Path] = typer.Option(None, "--image", "-i", help="An image file (repeatable)."),
    folder: Path = typer.Option(None, "--dir", help="Predict every image under this folder."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="Labels per image."),
    backend: Runner = "auto",
    device: Device = "cpu",
    json_path: Json = None,
    options: ModelOptions | None = None,
) -> None:
    """Top-k labels with softmax confidence for images (class names from the model's spec, --labels or --config)."""
    from toolchain.predict import PredictConfig, collect_images, predict
    from toolchain.report.tables import predict_view

    config = PredictConfig(top_k=top_k, runner=backend, device=device)
    paths = collect_images(image, folder)
    loaded = load_source(model, model_arg, options)
    results = predict(loaded, paths, config)
    finish(None, predict_view(loaded.name, results), json_path,
           data={"model": loaded.describe(), "classes": list(loaded.spec.labels),
                 "predictions": [p.to_dict() for p in results]}, schema=schema_id("predict"))
