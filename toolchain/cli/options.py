"""Option aliases shared by the commands (typer `Annotated`), so a flag reads and behaves the same everywhere,
and the shared option sets every command gets through one decorator:

    @model_options   the model flags (--weights --num-classes --config --input-size --mean --std --interpolation
                     --crop-pct --labels --pretrained), handed to the command as one validated `options`
                     (a toolchain.models.config.ModelOptions)
    @output_options  --quiet after the command name (results only)

The decorators add the parameters to the command's signature (typer reads it), so every command that loads a
model has exactly the same flags with the same help and validation.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from toolchain.cli.common import json_target, set_quiet

MODEL_HELP = "Registry name, checkpoint, run dir, artifact dir, model file, path/file.py:Class or HF dir."
DATA_HELP = "digits, synthetic, cifar10 or an ImageFolder dir [default: the model's recorded data, else photos]."

# model source: --model (or a MODEL argument) and what a registry name or file.py:Class needs
Model = Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP, show_default=False)]
ModelArg = Annotated[str | None, typer.Argument(metavar="MODEL", help="The model (same as --model).",
                                                show_default=False)]
Weights = Annotated[str | None, typer.Option(
    "--weights", help="A state_dict (or vtool checkpoint) to load into --model (registry name or file.py:Class).")]
NumClasses = Annotated[int | None, typer.Option(
    "--num-classes", help="Number of outputs of the model head (default: --labels, the --weights' head, the "
                          "model's own default, else the data's class folders).")]
InputSize = Annotated[str | None, typer.Option(
    "--input-size", help="Model input size N or HxW (default: the model's, e.g. 32 or 224).")]
Pretrained = Annotated[bool | None, typer.Option(
    "--pretrained/--no-pretrained", help="Start from pretrained weights (default: the registry's default).")]

# data and outputs
Data = Annotated[str | None, typer.Option("--data", "-d", help=DATA_HELP, show_default=False)]
Split = Annotated[str, typer.Option("--split", help="Data split: train, val, test, or all (every image).")]
SplitFile = Annotated[Path | None, typer.Option(
    "--split-file", show_default=False,
    help="Your own split: JSON {\"train\": [...], \"val\": [...], \"test\": [...]} of image paths relative to "
         "the --data folder.")]
TestData = Annotated[Path | None, typer.Option(
    "--test-data", show_default=False,
    help="A separate holdout ImageFolder: the test split is all of it (class folders named like --data's).")]
Json = Annotated[Path | None, typer.Option(
    "--json", callback=json_target, show_default=False,
    help="Write the result as JSON here ('-': to stdout, tables then go to stderr); see README: JSON schemas.")]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Output directory.", show_default=False)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace what --out already holds.")]

# quality gates
Gate = Annotated[str, typer.Option(
    "--gate", help="Gate rule: ci (fail only when the 95% interval lies wholly past a threshold: one flip in a "
                   "small set is inconclusive, not a failure) or observed (judge the observed values).")]

# how a model runs
Runner = Annotated[str, typer.Option("--backend", help="Runner that executes the model (auto: the format's default).")]
Device = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
Threads = Annotated[int | None, typer.Option(
    "--threads", help="Intra-op threads per runner (default: the backend's own).", show_default=False)]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per inference batch.")]


# ------------------------------------------------------------------ shared option sets

Config = Annotated[Path | None, typer.Option(
    "--config", show_default=False,
    help="Preprocessing and labels JSON: vtool keys (input_size, mean, std, interpolation, crop_pct, num_classes, "
         "labels), timm pretrained_cfg or HF preprocessor_config.json / config.json. Flags override it.")]
Mean = Annotated[str | None, typer.Option(
    "--mean", show_default=False, help="Normalisation mean per channel, e.g. 0.485,0.456,0.406 (one value: all).")]
Std = Annotated[str | None, typer.Option(
    "--std", show_default=False, help="Normalisation std per channel, e.g. 0.229,0.224,0.225 (one value: all).")]
Interpolation = Annotated[str | None, typer.Option(
    "--interpolation", show_default=False, help="Resize interpolation: nearest, bilinear or bicubic.")]
CropPct = Annotated[float | None, typer.Option(
    "--crop-pct", show_default=False,
    help="Center-crop fraction in (0, 1]: resize to size/crop-pct, then crop to size (timm's crop_pct).")]
Labels = Annotated[Path | None, typer.Option(
    "--labels", show_default=False, help="Class names: a text file, one name per line in class-index order.")]
Quiet = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Results only: no progress or INFO logs (warnings and errors still on stderr).")]

MODEL_FLAGS: dict[str, tuple[Any, Any]] = {
    "weights": (Weights, None), "num_classes": (NumClasses, None), "config": (Config, None),
    "input_size": (InputSize, None), "mean": (Mean, None), "std": (Std, None),
    "interpolation": (Interpolation, None), "crop_pct": (CropPct, None), "labels": (Labels, None),
    "pretrained": (Pretrained, None),
}


def _inject(func: Callable[..., Any], flags: dict[str, tuple[Any, Any]],
            collect: Callable[[dict[str, Any]], dict[str, Any]], replaces: tuple[str, ...] = ()) -> Callable[..., Any]:
    """Add keyword-only parameters `flags` to func's signature; `collect` turns their values into the keyword
    arguments func receives instead (e.g. one ModelOptions)."""
    signature = inspect.signature(func, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name not in replaces]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
             for name, (annotation, default) in flags.items()]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name, default) for name, (_, default) in flags.items()}
        return func(*args, **kwargs, **collect(given))

    wrapper.__signature__ = signature.replace(parameters=kept + added)  # type: ignore[attr-defined]
    return wrapper


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the shared model flags; it receives them as `options: ModelOptions` (validated inside the
    command, so a bad --mean or --labels file is a one-line error through `guarded`)."""

    def collect(given: dict[str, Any]) -> dict[str, Any]:
        from toolchain.models.config import ModelOptions

        return {"options": ModelOptions.from_flags(**given)}

    return _inject(func, MODEL_FLAGS, collect, replaces=("options",))


def output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command `--quiet` (also accepted before the command name: `vtool -q bench ...`)."""

    def collect(given: dict[str, Any]) -> dict[str, Any]:
        set_quiet(bool(given["quiet"]))
        return {}

    return _inject(func, {"quiet": (Quiet, False)}, collect)
