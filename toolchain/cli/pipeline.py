"""vtool pipeline: PipelineConfig -> toolchain.pipeline.run_pipeline -> artifact table -> --json -> exit 3 when
an artifact missed the parity thresholds."""

from __future__ import annotations

from pathlib import Path

import typer

from toolchain.cli import app
from toolchain.cli.common import console, finish, guarded, parse_int_list, parse_list
from toolchain.cli.options import Json, Threads, Track, TrackUri


@app.command("pipeline")
@guarded
def pipeline_cmd(
    model: str = typer.Option("simple-cnn", "--model", "-m", help="Registry name, checkpoint, run dir, "
                              "file.py:Class or HF dir. Registry models without pretrained weights are trained."),
    data: str = typer.Option("auto", "--data", "-d", help="digits, synthetic, an ImageFolder dir, or none. "
                             "auto: digits, or the bundled photos for pretrained ImageNet models."),
    formats: str = typer.Option("onnx,pt2,torchscript", help="Export formats, comma-separated."),
    quantize: str = typer.Option("ptq,qat", help="INT8 modes (ptq, qat), comma-separated; '' for none."),
    stages: str = typer.Option(",".join(("train", "eval", "export", "quantize", "bench", "parity", "report")),
                               help="Stages to run (train, eval, export, quantize, bench, parity, report)."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory [default: exported/<model>-<data>]."),
    epochs: int = typer.Option(15, help="Training epochs (registry models trained from scratch)."),
    qat_epochs: int = typer.Option(3, help="Quantization-aware fine-tuning epochs."),
    batch_size: str = typer.Option("1,32", "--batch-size", "-b", help="Batch sizes to benchmark."),
    bench_seconds: float = typer.Option(1.0, help="Seconds measured per (artifact, runner, batch)."),
    threads: Threads = None,
    max_drop: float = typer.Option(0.01, help="Largest top-1 drop (0.01 = 1 point) for INT8 and parity, "
                                   "on labelled data."),
    min_agreement: float = typer.Option(0.99, help="Smallest top-1 agreement with the original, on unlabelled "
                                        "data (bundled photos)."),
    explain_samples: int = typer.Option(16, "--explain-samples", help="Explanation parity of each INT8 artifact "
                                        "(occlusion heatmaps vs the original) on N images; 0 = off."),
    force: bool = typer.Option(False, help="Re-run every stage even when its inputs did not change."),
    track: Track = None,
    track_uri: TrackUri = None,
    json_path: Json = None,
) -> None:
    """Train or load -> export -> quantize -> bench -> parity -> report (HTML + Markdown).

    Re-running skips stages whose inputs did not change; a failed stage stops the run and keeps
    what already succeeded. Exits 3 when an artifact misses the parity thresholds.
    """
    from toolchain.pipeline import PipelineConfig, run_pipeline
    from toolchain.report.tables import pipeline_view

    config = PipelineConfig(model=model, data=data, formats=parse_list(formats), quantize=parse_list(quantize),
                            stages=parse_list(stages), out=out, epochs=epochs, qat_epochs=qat_epochs,
                            batch_sizes=parse_int_list(batch_size, "--batch-size"), bench_seconds=bench_seconds,
                            threads=threads, max_drop=max_drop, min_agreement=min_agreement, force=force,
                            explain_samples=explain_samples)
    from toolchain.tracking import log_pipeline, tracking

    with tracking(track, str(config.run), config.out, track_uri, "pipeline") as tracker:
        result = run_pipeline(config, notify=lambda msg: console(stderr=True).print(f"[bold cyan]>[/] {msg}"))
        log_pipeline(tracker, result, config.to_dict())
    finish(result, pipeline_view(result), json_path, out=console(min_width=150))
