"""vtool predict: PredictConfig -> toolchain.predict.predict -> table -> --json."""

from __future__ import annotations

from pathlib import Path

import typer

from toolchain.cli import app
from toolchain.cli.common import finish, guarded, load_source
from toolchain.cli.options import Device, InputSize, Json, Model, ModelArg, NumClasses, Pretrained, Runner, Weights


@app.command("predict")
@guarded
def predict_cmd(
    model_arg: ModelArg = None,
    model: Model = None,
    image: list[Path] = typer.Option(None, "--image", "-i", help="An image file (repeatable)."),
    folder: Path = typer.Option(None, "--dir", help="Predict every image under this folder."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="Labels per image."),
    backend: Runner = "auto",
    device: Device = "cpu",
    weights: Weights = None,
    num_classes: NumClasses = None,
    input_size: InputSize = None,
    pretrained: Pretrained = None,
    json_path: Json = None,
) -> None:
    """Top-k labels with softmax confidence for images (class names from the model's spec)."""
    from toolchain.predict import PredictConfig, collect_images, predict
    from toolchain.report.tables import predict_view

    config = PredictConfig(top_k=top_k, runner=backend, device=device)
    paths = collect_images(image, folder)
    loaded = load_source(model, model_arg, weights, num_classes, input_size, pretrained)
    results = predict(loaded, paths, config)
    finish(None, predict_view(loaded.name, results), json_path,
           data={"model": loaded.describe(), "predictions": [p.to_dict() for p in results]})
