"""vtool pipeline: PipelineConfig -> toolchain.pipeline.run_pipeline -> artifact table -> --json -> exit 3 when
an artifact missed the parity thresholds."""

from __future__ import annotations

from pathlib import Path

import typer

from toolchain.cli import app
from toolchain.cli.common import finish, guarded, parse_int_list, parse_list, schema_id, status_console
from toolchain.cli.options import (
    Gate,
    Json,
    SplitFile,
    TestData,
    Threads,
    Track,
    TrackUri,
    model_options,
    output_options,
)
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
    formats: str = typer.Option(None, help="Export formats, comma-separated [default: onnx,pt2,torchscript, plus "
                                "executorch,openvino when 'vtool[edge]' is installed]."),
    quantize: str = typer.Option(None, help="INT8 modes (ptq, qat, xnnpack), comma-separated; '' for none "
                                 "[default: ptq,qat, plus xnnpack when 'vtool[edge]' is installed]."),
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
    explain_samples: int = typer.Option(16, "--explain-samples", help="Explanation parity of each INT8 artifact "
                                        "(occlusion heatmaps vs the original) on N images; 0 = off."),
    force: bool = typer.Option(False, help="Re-run every stage even when its inputs did not change."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into an --out that holds other files."),
    track: Track = None,
    track_uri: TrackUri = None,
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

    lists = {key: parse_list(value) for key, value in (("formats", formats), ("quantize", quantize))
             if value is not None}
    config = PipelineConfig(model=model, data=data, stages=parse_list(stages), **lists, out=out, epochs=epochs,
                            qat_epochs=qat_epochs,
                            batch_sizes=parse_int_list(batch_size, "--batch-size"), bench_seconds=bench_seconds,
                            threads=threads, max_drop=max_drop, min_agreement=min_agreement, force=force,
                            overwrite=overwrite, options=options or ModelOptions(), split_file=split_file,
                            test_data=test_data, gate=gate, explain_samples=explain_samples)
    from toolchain.tracking import log_pipeline, tracking

    with tracking(track, str(config.run), config.out, track_uri, "pipeline") as tracker:
        from rich.markup import escape  # a budget table's [step: ...] is text, not markup
        result = run_pipeline(config, notify=lambda msg: status_console().print(f"[bold cyan]>[/] {escape(msg)}"))
        log_pipeline(tracker, result, config.to_dict())
    finish(result, pipeline_view(result), json_path, schema=schema_id("pipeline"))
