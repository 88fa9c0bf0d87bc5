"""Terminal rendering of a pipeline result (rich table), and the exit-3 gate on parity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolchain.errors import ThresholdError
from toolchain.pipeline.render import columns, fmt
from toolchain.pipeline.run import PipelineResult


def render_result(result: PipelineResult, console: Any, json_path: Path | None = None) -> None:
    from rich.table import Table

    from toolchain.sources import write_json

    report = result.report
    if report:
        from rich import box

        cols = [c for c in columns(report.get("batch_sizes", [1])) if c[0] != "format"]
        if not console.is_terminal:
            console.width = max(console.width, 150)  # logs and pipes: keep rows on one line
        table = Table(title=f"vtool pipeline: {report.get('run')}", box=box.SIMPLE_HEAD)
        for _, title in cols:
            table.add_column(title, justify="left" if title in ("artifact", "runner") else "right")
        for row in report.get("rows", []):
            table.add_row(*(fmt(row.get(key), key) for key, _ in cols))
        console.print(table)
    stages = ", ".join(f"{n} {s['status']} ({s['seconds']:.1f}s)" for n, s in result.stages.items())
    console.print(f"stages: {stages}")
    for kind, path in result.files.items():
        console.print(f"{kind} report: {path}")
    if json_path is not None:
        write_json(json_path, {**report, "files": result.files})
    if result.failed_parity:
        raise ThresholdError(f"parity thresholds not met for: {', '.join(result.failed_parity)} "
                             f"(see {result.files.get('html', result.run_dir)}).")
