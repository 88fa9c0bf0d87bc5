"""Bench results rendered (no measuring): the ranked rich table, Markdown, the --compare and --preprocess tables.

Every function takes the plain-dict form of a result (what `--json` writes), so a report can be
rendered again later from a saved file.
"""

from __future__ import annotations

import logging
from typing import Any

from toolchain.bench.result import rank_entries
from toolchain.report.format import fmt_batch, fmt_ms, fmt_speedup, fmt_threads, markdown_table

log = logging.getLogger(__name__)


BENCH_COLUMNS = ("model", "runner", "prec", "batch", "p50 ms", "p90 ms", "p99 ms", "cv", "img/s", "speedup",
                 "load s", "1st ms", "rss MB", "size MB")


def bench_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row of strings per entry, fastest first within each batch size, with speedup vs reference."""
    rows = []
    for entry, speedup, is_ref in rank_entries(result["entries"]):
        lat = entry["latency_ms"]
        cv = f"{entry['cv']:.3f}" + (" !" if entry.get("high_cv") else "")
        rows.append([
            entry["model"], entry["runner"], entry.get("precision", "?"), fmt_batch(entry), fmt_ms(lat["p50"]),
            fmt_ms(lat["p90"]), fmt_ms(lat["p99"]), cv, f"{entry['throughput_ips']:.1f}",
            fmt_speedup(speedup, is_ref), f"{entry.get('load_s', 0):.2f}", fmt_ms(entry.get("first_infer_ms")),
            "n/a" if entry.get("peak_rss_mb") is None else f"{entry['peak_rss_mb']:.0f}",
            "n/a" if entry.get("model_size_mb") is None else f"{entry['model_size_mb']:.2f}",
        ])
    return rows


def env_line(env: dict[str, Any]) -> str:
    from toolchain.envinfo import describe_cpu

    gpu = (env.get("gpu") or {}).get("name")
    versions = env.get("versions", {})
    libs = ", ".join(f"{k} {versions[k]}" for k in ("torch", "onnxruntime", "openvino") if k in versions)
    commit = (env.get("vtool") or {}).get("commit")
    parts = [describe_cpu(env), f"device {env.get('device', 'cpu')}", f"threads {fmt_threads(env.get('threads'))}"]
    if gpu:
        parts.append(f"GPU {gpu}")
    if env.get("load_average"):
        parts.append(f"load {env['load_average'][0]}")
    parts.append(libs)
    if commit:
        parts.append(f"vtool {commit[:10]}" + ("+dirty" if env["vtool"].get("dirty") else ""))
    return " | ".join(p for p in parts if p)


def bench_footnotes(result: dict[str, Any], warnings: bool = True) -> list[str]:
    """Notes, skipped entries and (unless already logged) warnings worth printing under a table."""
    lines = list(result.get("notes", []))
    for s in result.get("skipped", []):
        where = f" / b{s['batch_size']}" if s.get("batch_size") is not None else ""
        lines.append(f"skipped {s['model']} / {s['runner']}{where}: {s['reason']}")
    if warnings:
        lines += [f"warning: {w}" for w in result.get("warnings", [])]
    if any(e.get("includes_h2d") for e in result["entries"]):
        lines.append("CUDA latencies include host-to-device and device-to-host copies (pinned host memory).")
    return lines


# ------------------------------------------------------------------ rich / Markdown / JSON


def bench_table(result: dict[str, Any]) -> Any:
    """A rich Table of a bench result (fastest first per batch size; speedup vs the first entry measured), with a
    'compile s' column when a runner compiled on its first call."""
    from rich.table import Table

    compiles = any(e.get("compile_s") is not None for e in result["entries"])
    table = Table(title="vtool bench", caption=env_line(result.get("env", {})), caption_justify="left")
    for column in BENCH_COLUMNS + (("compile s",) if compiles else ()):
        left = column in ("model", "runner", "prec")
        table.add_column(column, justify="left" if left else "right", no_wrap=column != "model",
                         overflow="fold")
    for row, (entry, _, _) in zip(bench_rows(result), rank_entries(result["entries"]), strict=True):
        compile_s = entry.get("compile_s")
        table.add_row(*row, *(("-" if compile_s is None else f"{compile_s:.1f}",) if compiles else ()))
    return table


def bench_markdown(result: dict[str, Any]) -> str:
    """A Markdown report: environment line, the ranked table, notes."""
    parts = ["# vtool bench", "", f"Environment: {env_line(result.get('env', {}))}", "",
             markdown_table(BENCH_COLUMNS, bench_rows(result)), ""]
    config = result.get("config", {})
    if config:
        how = (f"{config['iterations']} iterations" if config.get("iterations")
               else f"{config.get('measure_duration_s')} s per entry")
        parts += [f"Measured: {how} after warm-up; latencies per request (batch), throughput in images/s.", ""]
    notes = bench_footnotes(result)
    if notes:
        parts += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(parts)


# ------------------------------------------------------------------ comparison and preprocessing


def compare_table(comparison: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"vtool bench --compare (max regression {comparison['max_regression']:.0%})")
    for column in ("entry", "old p50 ms", "new p50 ms", "change", "old img/s", "new img/s", "status"):
        table.add_column(column, justify="left" if column in ("entry", "status") else "right")
    for row in comparison["rows"]:
        change = "n/a" if row["change"] is None else f"{row['change']:+.1%}"
        status = row["status"] + (" (noisy)" if row.get("noisy") else "")
        style = {"regression": "red", "faster": "green"}.get(row["status"], "")
        table.add_row(row["label"], fmt_ms(row.get("old_p50_ms")), fmt_ms(row.get("new_p50_ms")), change,
                      _fmt_ips(row.get("old_throughput_ips")), _fmt_ips(row.get("new_throughput_ips")), status,
                      style=style)
    return table


def _fmt_ips(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def preprocess_table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    fastest = max(r["images_per_s"] for r in rows) if rows else 0
    threads = rows[0].get("threads", "?") if rows else "?"
    table = Table(title=f"preprocessing throughput (decode + resize + crop + normalize, one image at a time, "
                        f"torch threads {threads})")
    for column in ("pipeline", "images", "img/s", "p50 ms/img", "p90 ms/img", "vs fastest", "output"):
        table.add_column(column, justify="left" if column == "pipeline" else "right")
    for row in sorted(rows, key=lambda r: -r["images_per_s"]):
        table.add_row(row["pipeline"], str(row["images"]), f"{row['images_per_s']:.1f}",
                      fmt_ms(row["ms_per_image"]["p50"]), fmt_ms(row["ms_per_image"]["p90"]),
                      f"{row['images_per_s'] / fastest:.2f}x", "x".join(map(str, row["output_shape"])))
    return table
