"""vtool eval: EvalConfig -> toolchain.evaluate.evaluate -> tables -> --json."""

from __future__ import annotations

from pathlib import Path

import typer

from toolchain.cli import app
from toolchain.cli.common import finish, guarded, load_source
from toolchain.cli.launcher import Nproc, Workers, launch_if_asked
from toolchain.cli.options import (
    BatchSize,
    Device,
    InputSize,
    Json,
    Model,
    ModelArg,
    NumClasses,
    Pretrained,
    Runner,
    Split,
    Threads,
    Weights,
)


@app.command("eval")
@guarded
def eval_cmd(
    ctx: typer.Context,
    model_arg: ModelArg = None,
    model: Model = None,
    data: str = typer.Option(None, "--data", "-d", help="Data to score on (default: what the model recorded)."),
    split: Split = "test",
    out: Path = typer.Option(None, "--out", "-o", help="Write metrics.json and PNG plots here "
                                                       "(default: RUN_DIR/eval-SPLIT for a training run)."),
    backend: Runner = "auto",
    device: Device = "cpu",
    threads: Threads = None,
    batch_size: BatchSize = 64,
    nproc: Nproc = None,
    workers: Workers = 0,
    weights: Weights = None,
    num_classes: NumClasses = None,
    input_size: InputSize = None,
    pretrained: Pretrained = None,
    json_path: Json = None,
) -> None:
    """Score a model: accuracy, top-5, per-class precision/recall/F1, confusion matrix, misclassified images.

    --nproc N shards the images over N processes (each runs every N-th batch); rank 0 gathers the logits, so the
    scores equal one process's."""
    from toolchain.evaluate import EvalConfig, evaluate
    from toolchain.report.tables import eval_view
    from toolchain.train import is_run_dir

    config = EvalConfig(split=split, runner=backend, device=device, threads=threads, batch_size=batch_size,
                        workers=workers)
    if launch_if_asked(ctx, nproc, device, threads):
        return
    loaded = load_source(model, model_arg, weights, num_classes, input_size, pretrained)
    source = Path(model or model_arg)
    if out is None and is_run_dir(source):
        out = source / f"eval-{split}"
    result = evaluate(loaded, data, config, out)
    finish(result, eval_view(result), json_path)
