"""Option aliases shared by the commands (typer `Annotated`), so a flag reads and behaves the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

MODEL_HELP = "Registry name, checkpoint, run dir, artifact dir, model file, path/file.py:Class or HF dir."
DATA_HELP = "digits, synthetic, cifar10 or an ImageFolder dir [default: the model's recorded data, else photos]."

# model source: --model (or a MODEL argument) and what a registry name or file.py:Class needs
Model = Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP, show_default=False)]
ModelArg = Annotated[str | None, typer.Argument(metavar="MODEL", help="The model (same as --model).",
                                                show_default=False)]
Weights = Annotated[str | None, typer.Option(
    "--weights", help="A state_dict (or vtool checkpoint) to load into --model (registry name or file.py:Class).")]
NumClasses = Annotated[int | None, typer.Option(
    "--num-classes", help="Number of outputs of the model head (default: the registry's / the data's).")]
InputSize = Annotated[str | None, typer.Option(
    "--input-size", help="Model input size N or HxW (default: the model's, e.g. 32 or 224).")]
Pretrained = Annotated[bool | None, typer.Option(
    "--pretrained/--no-pretrained", help="Start from pretrained weights (default: the registry's default).")]

# data and outputs
Data = Annotated[str | None, typer.Option("--data", "-d", help=DATA_HELP, show_default=False)]
Split = Annotated[str, typer.Option("--split", help="Data split: train, val or test.")]
Json = Annotated[Path | None, typer.Option("--json", help="Write the result as JSON here.", show_default=False)]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Output directory.", show_default=False)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace what --out already holds.")]

# how a model runs
Runner = Annotated[str, typer.Option("--backend", help="Runner that executes the model (auto: the format's default).")]
Device = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
Threads = Annotated[int | None, typer.Option(
    "--threads", help="Intra-op threads per runner (default: the backend's own).", show_default=False)]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per inference batch.")]

# experiment tracking (toolchain.tracking)
Track = Annotated[str | None, typer.Option(
    "--track", help="Record the run in an experiment tracker: mlflow (a local mlruns/ store; pip install "
    "'vtool[track]').", show_default=False)]
TrackUri = Annotated[str | None, typer.Option(
    "--track-uri", help="Tracking store URI [default: mlruns/ beside --out, else in the working directory].",
    show_default=False)]
