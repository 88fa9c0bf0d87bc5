"""vtool eval: EvalConfig -> toolchain.evaluate.evaluate -> tables -> --json."""

from __future__ import annotations

from pathlib import Path

import typer

from toolchain.cli import app
from toolchain.cli.common import finish, guarded, load_source, schema_id
from toolchain.cli.launcher import Nproc, Workers, launch_if_asked
from toolchain.cli.options import (
    BatchSize,
    Data,
    Device,
    Json,
    Model,
    ModelArg,
    Runner,
    Split,
    SplitFile,
    TestData,
    Threads,
    model_options,
    output_options,
)
from toolchain.models.config import ModelOptions


@app.command("eval")
@guarded
@output_options
@model_options
def eval_cmd(
    ctx: typer.Context,
    model_arg: ModelArg = None,
    model: Model = None,
    data: Data = None,
    split: Split = "test",
    split_file: SplitFile = None,
    test_data: TestData = None,
    out: Path = typer.Option(None, "--out", "-o", help="Write metrics.json and PNG plots here "
                                                       "(default: RUN_DIR/eval-SPLIT for a training run)."),
    backend: Runner = "auto",
    device: Device = "cpu",
    threads: Threads = None,
    batch_size: BatchSize = 64,
    nproc: Nproc = None,
    workers: Workers = 0,
    json_path: Json = None,
    options: ModelOptions | None = None,
) -> None:
    """Score a model: accuracy, top-5, per-class precision/recall/F1, confusion matrix, misclassified images.

    --nproc N shards the images over N processes (each runs every N-th batch); rank 0 gathers the logits, so the
    scores equal one process's."""
    from toolchain.evaluate import EvalConfig, evaluate
    from toolchain.report.tables import eval_view
    from toolchain.train import is_run_dir

    config = EvalConfig(split=split, runner=backend, device=device, threads=threads, batch_size=batch_size,
                        workers=workers, split_file=split_file, test_data=test_data)
    if launch_if_asked(ctx, nproc, device, threads):
        return
    loaded = load_source(model, model_arg, options, data=data or (str(test_data) if test_data else None))
    source = Path(model or model_arg)
    if out is None and is_run_dir(source):
        out = source / f"eval-{split}"
    result = evaluate(loaded, data, config, out)
    finish(result, eval_view(result), json_path, schema=schema_id("eval"))
