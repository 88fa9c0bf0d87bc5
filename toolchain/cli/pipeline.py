"""vtool pipeline: PipelineConfig -> toolchain.pipeline.run_pipeline -> artifact table -> --json -> exit 3 when
an artifact missed the parity thresholds."""

from __future__ import annotations

from pathlib import Path

import typer

from toolchain.cli import app
from toolchain.cli.common import finish, guarded, parse_int_list, parse_list, schema_id, status_console
from toolchain.cli.options import Gate, Json, SplitFile, TestData, Threads, model_options, output_options
from toolchain.models.config import ModelOptions


@app.command("pipeline")
@guarded
@output_options
@model_options
def pipeline_cmd(
    model: str = typer.Option("simple-cnn", "--model", "-m", help="Registry name, checkpoint, run dir, "
                              "file.py:Class or HF dir. Registry models without pretrained weights are trained."),
    data: str = typer.Option("auto", "--data", "-d", help="digits, synthetic, an ImageFolder dir, or none. "
                             "auto: digits, or the bundled photos for pretrained ImageNet models."),
    split_file: SplitFile = None,
    test_data: TestData = None,
    formats: str = typer.Option("onnx,pt2,torchscript", help="Export formats, comma-separated."),
    quantize: str = typer.Option("ptq,qat", help="INT8 modes (ptq, qat), comma-separated; '' for none."),
    stages: str = typer.Option(",".join(("train", "eval", "export", "quantize", "bench", "parity", "report")),
                               help="Stages to run (train, eval, export, quantize, bench, parity, report)."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default: exported/<model>-<data>)."),
    epochs: int = typer.Option(15, help="Training epochs (registry models trained from scratch)."),
    qat_epochs: int = typer.Option(3, help="Quantization-aware fine-tuning epochs."),
    batch_size: str = typer.Option("1,32", "--batch-size", "-b", help="Batch sizes to benchmark."),
    bench_seconds: float = typer.Option(1.0, help="Seconds measured per (artifact, runner, batch)."),
    threads: Threads = None,
    max_drop: float = typer.Option(0.01, help="Largest top-1 drop (0.01 = 1 point) for INT8 and parity, "
                                   "on labelled data."),
    min_agreement: float = typer.Option(0.99, help="Smallest top-1 agreement with the original, on unlabelled "
                                        "data (bundled photos)."),
    gate: Gate = "ci",
    force: bool = typer.Option(False, help="Re-run every stage even when its inputs did not change."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into an --out that holds other files."),
    json_path: Json = None,
    options: ModelOptions | None = None,
) -> None:
    """Train or load -> export -> quantize -> bench -> parity -> report (HTML + Markdown).

    Re-running skips stages whose inputs did not change. A failed stage is recorded with its reason and the run
    goes on with what does not need it; the report is written either way. Exits 3 when an artifact misses the
    parity thresholds (or a stage missed a quality gate), 1 when a stage failed for another reason.
    """
    from toolchain.pipeline import PipelineConfig, run_pipeline
    from toolchain.report.tables import pipeline_view

    config = PipelineConfig(model=model, data=data, formats=parse_list(formats), quantize=parse_list(quantize),
                            stages=parse_list(stages), out=out, epochs=epochs, qat_epochs=qat_epochs,
                            batch_sizes=parse_int_list(batch_size, "--batch-size"), bench_seconds=bench_seconds,
                            threads=threads, max_drop=max_drop, min_agreement=min_agreement, force=force,
                            overwrite=overwrite, options=options or ModelOptions(), split_file=split_file,
                            test_data=test_data, gate=gate)
    result = run_pipeline(config, notify=lambda msg: status_console().print(f"[bold cyan]>[/] {msg}"))
    finish(result, pipeline_view(result), json_path, schema=schema_id("pipeline"))
