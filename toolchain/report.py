"""Rendering only (no measuring): rich tables, Markdown, matplotlib PNG plots and JSON for results.

Every function takes the plain-dict form of a result (what `--json` writes), so a report can be
rendered again later from a saved file. Small functions, meant to be reused by other reports.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from toolchain.bench.result import entry_label, rank_entries
from toolchain.plots import pyplot, save_figure

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ formatting helpers


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def fmt_count(value: int | float | None) -> str:
    """12345678 -> '12.3M'; None -> 'n/a'."""
    if value is None:
        return "n/a"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return str(int(value))


def fmt_speedup(speedup: float | None, is_ref: bool) -> str:
    if is_ref:
        return "1.00x (ref)"
    return "n/a" if speedup is None else f"{speedup:.2f}x"


def fmt_threads(value: int | None) -> str:
    return "auto" if value is None else str(value)


BENCH_COLUMNS = ("model", "runner", "prec", "batch", "p50 ms", "p90 ms", "p99 ms", "cv", "img/s", "speedup",
                 "load s", "1st ms", "rss MB", "size MB")


def fmt_batch(entry: dict[str, Any]) -> str:
    """'32', or '32 x4' for 4 concurrent requests of batch 32."""
    conc = int(entry.get("concurrency", 1))
    return str(entry["batch_size"]) + (f" x{conc}" if conc > 1 else "")


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
    """A rich Table of a bench result (fastest first per batch size; speedup vs the first entry measured)."""
    from rich.table import Table

    table = Table(title="vtool bench", caption=env_line(result.get("env", {})), caption_justify="left")
    for column in BENCH_COLUMNS:
        left = column in ("model", "runner", "prec")
        table.add_column(column, justify="left" if left else "right", no_wrap=column != "model",
                         overflow="fold")
    for row in bench_rows(result):
        table.add_row(*row)
    return table


def markdown_table(headers: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


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


def write_text(path: str | Path, text: str) -> Path:
    from toolchain.artifact import atomic_write_text

    atomic_write_text(path, text)
    return Path(path)


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    from toolchain.sources import write_json as _write_json

    _write_json(path, data)
    return Path(path)


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


# ------------------------------------------------------------------ plots




def plot_latency_vs_batch(ax: Any, entries: list[dict[str, Any]]) -> None:
    """p50 latency (ms, log scale) against batch size, one line per (model, runner) at concurrency 1."""
    series: dict[str, list[tuple[int, float]]] = {}
    for e in entries:
        if int(e.get("concurrency", 1)) == 1:
            point = (int(e["batch_size"]), float(e["latency_ms"]["p50"]))
            series.setdefault(f"{e['model']} / {e['runner']}", []).append(point)
    for label, points in series.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    batches = sorted({p[0] for points in series.values() for p in points})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    if batches:
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(batches[0] / 1.5, batches[-1] * 1.5)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 latency per batch (ms)")
    ax.set_title("Latency vs batch size")
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.15), ncols=2, frameon=False)


def plot_throughput_bars(ax: Any, entries: list[dict[str, Any]]) -> None:
    """Horizontal throughput bars (images/s), fastest at the top."""
    ordered = sorted(entries, key=lambda e: e["throughput_ips"])
    labels = [entry_label(e) for e in ordered]
    ax.barh(range(len(ordered)), [e["throughput_ips"] for e in ordered], color="tab:blue")
    ax.set_yticks(range(len(ordered)), labels, fontsize=7)
    ax.set_xlabel("throughput (images/s)")
    ax.set_title("Throughput")
    ax.grid(True, axis="x", alpha=0.3)


def bench_plot(result: dict[str, Any], path: str | Path) -> Path:
    """Write a PNG with latency vs batch size (per runner) and throughput bars."""
    plt = pyplot()
    entries = result["entries"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, max(4.5, 0.28 * len(entries) + 2.0)), layout="constrained")
    plot_latency_vs_batch(left, entries)
    plot_throughput_bars(right, entries)
    fig.suptitle(env_line(result.get("env", {})), fontsize=8)
    return save_figure(fig, path)
