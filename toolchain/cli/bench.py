"""vtool bench: BenchConfig -> toolchain.bench.benchmark -> ranked table -> --json/--markdown/--plot;
--compare (exit 3 on a regression) and --preprocess."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from toolchain.cli import app
from toolchain.cli.common import console, finish, guarded, parse_int_list, parse_list, status_console, write_json
from toolchain.cli.options import Json, Threads, model_options, output_options
from toolchain.models.config import ModelOptions

SCHEMAS = {"bench": "vtool.bench/1", "compare": "vtool.bench-compare/1", "preprocess": "vtool.bench-preprocess/1"}


def _write(data: dict[str, Any], json_out: Path | None, markdown: Path | None = None, plot: Path | None = None,
           schema: str = SCHEMAS["bench"]) -> None:
    """--json (`-`: stdout), --markdown and --plot; each file named on stderr once written."""
    from toolchain.report import write_text
    from toolchain.report.bench import bench_markdown
    from toolchain.report.plots import bench_plot

    if json_out:
        write_json(json_out, data, schema)
    if markdown:
        status_console().print(f"wrote {write_text(markdown, bench_markdown(data))}")
    if plot:
        status_console().print(f"wrote {bench_plot(data, plot)}")


def _compare(old: Path, new: Path, max_regression: float, json_out: Path | None) -> None:
    from toolchain.bench import compare_results, load_result
    from toolchain.report.bench import compare_table

    comparison = compare_results(load_result(old), load_result(new), max_regression)
    view = [compare_table(comparison.to_dict()), *(f"note: environment changed: {n}" for n in comparison.notes)]
    for item in view:
        console().print(item)
    _write(comparison.to_dict(), json_out, schema=SCHEMAS["compare"])
    finish(comparison, [])


def _preprocess(models: list[str], duration: float | None, threads: int | None, json_out: Path | None,
                options: ModelOptions | None) -> None:
    import tempfile

    from toolchain.bench.preprocessing import preprocess_throughput, save_photos
    from toolchain.report.bench import preprocess_table
    from toolchain.sources import load_model

    spec = load_model(models[0], options=options).spec if models else None
    with tempfile.TemporaryDirectory(prefix="vtool-photos-") as folder:
        rows = preprocess_throughput(save_photos(folder), spec, duration_s=duration or 2.0, threads=threads or 1)
    console().print(preprocess_table(rows))
    _write({"preprocess": rows}, json_out, schema=SCHEMAS["preprocess"])


@app.command("bench")
@guarded
@output_options
@model_options
def bench_cmd(
    models: list[str] | None = typer.Argument(None, help="Models/artifacts to measure (default: every artifact under "
                                       "exported/, else the simple-cnn registry model).", show_default=False),
    backend: str | None = typer.Option(None, "--backend", help="Comma list of runners (default: every installed runner "
                                "that can run each model)."),
    batch_size: str = typer.Option("1", "--batch-size", help="Comma list of batch sizes, e.g. 1,8,32."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: Threads = None,
    iterations: int | None = typer.Option(None, "--iterations", help="Measure exactly N calls (or --duration)."),
    duration: float | None = typer.Option(None, "--duration", help="Measure for S seconds per entry (default 3)."),
    warmup: float = typer.Option(0.5, "--warmup", help="Minimum warm-up seconds (then until timings settle)."),
    warmup_iterations: int = typer.Option(5, "--warmup-iterations", help="Minimum warm-up calls."),
    concurrency: str = typer.Option("1", "--concurrency", help="Comma list of requests in flight (threads)."),
    inputs: str = typer.Option("auto", "--inputs", help="auto (real images, else synthetic), real or synthetic."),
    data: str | None = typer.Option(None, "--data", help="Data source for real inputs (default: the model's own)."),
    json_out: Json = None,
    markdown: Path | None = typer.Option(None, "--markdown", help="Write a Markdown report."),
    plot: Path | None = typer.Option(None, "--plot", help="Write PNG plots (latency vs batch, throughput)."),
    compare: tuple[Path, Path] | None = typer.Option(None, "--compare", help="OLD.json NEW.json: show the change; "
                                              "exit 3 on a regression.", show_default=False),
    max_regression: float = typer.Option(0.1, "--max-regression", help="With --compare: allowed p50 slowdown."),
    preprocess: bool = typer.Option(False, "--preprocess", help="Measure image preprocessing throughput instead."),
    options: ModelOptions | None = None,
) -> None:
    """Benchmark latency and throughput of models on every runner, batch size and concurrency level.

    The model flags (--weights, --num-classes, --config, ...) apply to every MODEL that needs them (a registry
    name or file.py:Class, a bare .onnx/.pt2/.ts file); artifacts and checkpoints carry their own.
    """
    if compare is not None:
        return _compare(compare[0], compare[1], max_regression, json_out)
    if preprocess:
        return _preprocess(models or [], duration, threads, json_out, options)
    from toolchain.bench import BenchConfig, WarmupPolicy, benchmark, default_models
    from toolchain.report.bench import bench_footnotes, bench_table
    from toolchain.sources import load_model, options_for

    config = BenchConfig(
        backends=parse_list(backend) if backend is not None else None,
        batch_sizes=parse_int_list(batch_size, "--batch-size"), device=device, threads=threads,
        iterations=iterations, duration_s=duration, concurrency=parse_int_list(concurrency, "--concurrency"),
        warmup=WarmupPolicy(min_iterations=warmup_iterations, min_s=warmup, max_s=max(10.0, warmup)),
        inputs=inputs, data=data,
    )
    loaded = [load_model(m, options=options_for(m, options), data=data) for m in (models or default_models())]
    err = status_console()
    with err.status("benchmarking...") as status:
        result = benchmark(loaded, config, progress=lambda m: status.update(f"measuring {m}"))
    data_out = result.to_dict()
    console().print(bench_table(data_out))
    for line in bench_footnotes(data_out, warnings=False):  # warnings were logged already
        err.print(line)
    _write(data_out, json_out, markdown, plot)
