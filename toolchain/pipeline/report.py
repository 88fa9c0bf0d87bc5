"""Collect the pipeline's numbers into one report dict, draw its plots, write report.html/.md/.json."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolchain.artifact import atomic_write_text
from toolchain.pipeline.render import render_html, render_markdown

if TYPE_CHECKING:
    from toolchain.pipeline.run import Pipeline

REFERENCE_NAME = "original"


def _read(path: str | Path | None) -> dict[str, Any]:
    return json.loads(Path(path).read_text()) if path and Path(path).is_file() else {}


def build_rows(bench: dict[str, Any], parity: dict[str, Any], reference_name: str, reference_acc: float | None,
               batch_sizes: list[int]) -> list[dict[str, Any]]:
    """One row per (model, runner): latency per batch size, throughput, speedup, parity figures."""
    largest = max(batch_sizes)
    groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for entry in bench.get("entries", []):
        if int(entry.get("concurrency", 1)) == 1:
            groups.setdefault((entry["model"], entry["runner"]), {})[int(entry["batch_size"])] = entry
    rows = []
    for (model, runner), by_batch in groups.items():
        any_entry = next(iter(by_batch.values()))
        is_ref = model == reference_name
        row: dict[str, Any] = {
            "artifact": REFERENCE_NAME if is_ref else model, "runner": runner, "format": any_entry.get("format"),
            "precision": any_entry.get("precision"), "size_mb": any_entry.get("model_size_mb"),
        }
        for b in batch_sizes:
            row[f"p50_b{b}_ms"] = by_batch.get(b, {}).get("latency_ms", {}).get("p50")
        row["throughput_ips"] = by_batch.get(largest, {}).get("throughput_ips")
        par = parity.get(model, {})
        row["accuracy"] = reference_acc if is_ref else par.get("top1_cand")
        row["top1_delta"] = None if is_ref else par.get("top1_delta")
        row["agreement"] = None if is_ref else par.get("agreement")
        row["passed"] = None if is_ref else par.get("passed")
        rows.append(row)
    ref_ips = next((r["throughput_ips"] for r in rows if r["artifact"] == REFERENCE_NAME and r["runner"] == "torch"),
                   None)
    for row in rows:
        row["speedup"] = row["throughput_ips"] / ref_ips if ref_ips and row["throughput_ips"] else None
    return rows


def latency_accuracy_plot(rows: list[dict[str, Any]], batch: int, path: Path) -> Path | None:
    """Each artifact as a point: p50 latency at `batch` against accuracy (or agreement)."""
    from toolchain.plots import pyplot, save_figure

    points = [(r[f"p50_b{batch}_ms"], r["accuracy"] if r["accuracy"] is not None else r["agreement"],
               f"{r['artifact']} / {r['runner']}") for r in rows]
    points = [p for p in points if p[0] is not None and p[1] is not None]
    if not points:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for latency, acc, label in points:
        ax.scatter(latency, acc, s=40)
        ax.annotate(label, (latency, acc), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency at batch {batch} (ms, log scale)")
    ax.set_ylabel("top-1 accuracy" if rows and rows[0]["accuracy"] is not None else "top-1 agreement")
    ax.set_title("latency vs accuracy")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def build_report(pipe: Pipeline) -> tuple[dict[str, Any], dict[str, str]]:
    cfg, out, outputs = pipe.config, pipe.out, pipe.outputs
    bench = _read(outputs.get("bench", {}).get("json"))
    parity = _read(outputs.get("parity", {}).get("json"))
    evaluation = outputs.get("eval", {})
    reference = pipe.reference
    ref_name = reference.name if reference else ""
    ref_acc = evaluation.get("accuracy")
    if ref_acc is None and parity:
        ref_acc = next(iter(parity.values())).get("top1_ref")
    rows = build_rows(bench, parity, ref_name, ref_acc, list(cfg.batch_sizes))
    plots: dict[str, Any] = {
        "latency_accuracy": latency_accuracy_plot(rows, min(cfg.batch_sizes), out / "latency_accuracy.png"),
        "throughput": outputs.get("bench", {}).get("plot"),
        "curves": outputs.get("train", {}).get("curves") or _checkpoint_curves(reference),
        "confusion": evaluation.get("files", {}).get("confusion_matrix"),
        "misclassified": evaluation.get("files", {}).get("misclassified"),
    }
    env = bench.get("env", {})
    first = next(iter(parity.values()), {})
    summary: dict[str, Any] = {"artifacts": len(pipe.artifacts)}
    if ref_acc is not None:
        summary["accuracy"] = ref_acc
    passed = [r["passed"] for r in rows if r["passed"] is not None]
    if passed:
        summary["parity"] = f"{sum(passed)}/{len(passed)} pass"
    best = max((r for r in rows if r.get("speedup")), key=lambda r: r["speedup"], default=None)
    if best:
        summary["fastest"] = f"{best['artifact']} / {best['runner']} ({best['speedup']:.2f}x)"
    report = {
        "run": cfg.run, "model": cfg.model, "data": cfg.data or "bundled photos",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "batch_sizes": list(cfg.batch_sizes), "device": "cpu", "rows": rows, "summary": summary,
        "stages": pipe.book.summary(), "parity_data": first.get("data", {}).get("source", cfg.data),
        "env": {k: v for k, v in _flatten_env(env).items()},
    }
    files = {"html": str(out / "report.html"), "markdown": str(out / "report.md"), "json": str(out / "report.json")}
    atomic_write_text(files["html"], render_html(report, plots))
    atomic_write_text(files["markdown"], render_markdown(report, plots, out))
    atomic_write_text(files["json"], json.dumps(report, indent=2, default=str))
    return report, files


def _checkpoint_curves(reference: Any) -> str | None:
    """A model loaded from a training run still shows that run's curves."""
    checkpoint = getattr(reference, "checkpoint", None)
    curves = Path(checkpoint).parent / "curves.png" if checkpoint else None
    return str(curves) if curves and curves.is_file() else None


def _flatten_env(env: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in env.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                flat[f"{key}.{sub}"] = inner
        elif isinstance(value, list):
            flat[key] = ", ".join(map(str, value))
        else:
            flat[key] = value
    return flat
