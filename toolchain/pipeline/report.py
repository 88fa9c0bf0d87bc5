"""Collect a pipeline run's numbers into one report dict, draw its plots, write report.html/.md/.json.

build_report() reads a plain RunRecord (what the run produced), not the orchestrator, so a report can
be rebuilt from a run directory's files. Rendering itself lives in toolchain.report.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.report import write_result, write_text
from toolchain.report.pipeline import render_html, render_markdown
from toolchain.report.plots import latency_accuracy_plot

REFERENCE_NAME = "original"


@dataclass
class RunRecord:
    """What a pipeline run produced, as plain data: stage outputs (pipeline.json's), stage statuses, the run's
    identity and where it lives."""

    run: str
    model: str
    data: str | None
    out: Path
    batch_sizes: list[int]
    reference_name: str
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    curves: str | None = None  # training curves PNG (this run's, or the checkpoint's run's)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> {"error", "exit_code"}
    classes: list[str] = field(default_factory=list)  # the reference's class names, in index order
    gate: str = ""  # the gate rule, in words
    split: dict[str, Any] = field(default_factory=dict)  # how the data was split (datasplit.describe_split)


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
        _parity_cells(row, par, reference_acc if is_ref else None, is_ref)
        rows.append(row)
    measured = {model for model, _ in groups}
    for model, par in parity.items():  # an artifact whose bench failed still shows its parity
        if model not in measured:
            row = {"artifact": model, "runner": par.get("candidate", {}).get("runner"), "format": None,
                   "precision": None, "size_mb": None, **{f"p50_b{b}_ms": None for b in batch_sizes},
                   "throughput_ips": None}
            _parity_cells(row, par, None, False)
            rows.append(row)
    ref_ips = next((r["throughput_ips"] for r in rows if r["artifact"] == REFERENCE_NAME and r["runner"] == "torch"),
                   None)
    for row in rows:
        row["speedup"] = row["throughput_ips"] / ref_ips if ref_ips and row["throughput_ips"] else None
    return rows


def _parity_cells(row: dict[str, Any], par: dict[str, Any], reference_acc: float | None, is_ref: bool) -> None:
    row["accuracy"] = reference_acc if is_ref else par.get("top1_cand")
    for key in ("top1_delta", "agreement", "passed", "flips", "n"):
        row[key] = None if is_ref else par.get(key)


def parity_details(parity: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per artifact: n, flips, the agreement interval, and why it failed (or passed only as inconclusive)."""
    return {name: {"n": p.get("n"), "flips": p.get("flips"), "agreement_ci": p.get("agreement_ci"),
                   "failures": p.get("failures", []), "notes": (p.get("gate") or {}).get("notes", []),
                   "data": (p.get("data") or {}).get("part")} for name, p in parity.items()}


def build_report(record: RunRecord) -> tuple[dict[str, Any], dict[str, str]]:
    """The report dict (rows, summary, stages, environment) and the paths of report.html/.md/.json."""
    out, outputs = Path(record.out), record.outputs
    bench = _read(outputs.get("bench", {}).get("json"))
    parity = _read(outputs.get("parity", {}).get("json"))
    evaluation = outputs.get("eval", {})
    ref_acc = evaluation.get("accuracy")
    if ref_acc is None and parity:
        ref_acc = next(iter(parity.values())).get("top1_ref")
    rows = build_rows(bench, parity, record.reference_name, ref_acc, list(record.batch_sizes))
    plots: dict[str, Any] = {
        "latency_accuracy": latency_accuracy_plot(rows, min(record.batch_sizes), out / "latency_accuracy.png"),
        "throughput": outputs.get("bench", {}).get("plot"),
        "curves": outputs.get("train", {}).get("curves") or record.curves,
        "confusion": evaluation.get("files", {}).get("confusion_matrix"),
        "misclassified": evaluation.get("files", {}).get("misclassified"),
    }
    env = bench.get("env", {})
    first = next(iter(parity.values()), {})
    summary: dict[str, Any] = {"artifacts": len(record.artifacts)}
    if ref_acc is not None:
        summary["accuracy"] = ref_acc
    passed = [r["passed"] for r in rows if r["passed"] is not None]
    if passed:
        summary["parity"] = f"{sum(passed)}/{len(passed)} pass"
    if record.failures:
        summary["failed stages"] = ", ".join(record.failures)
    best = max((r for r in rows if r.get("speedup")), key=lambda r: r["speedup"], default=None)
    if best:
        summary["fastest"] = f"{best['artifact']} / {best['runner']} ({best['speedup']:.2f}x)"
    report = {
        "run": record.run, "model": record.model, "data": record.data or "bundled photos",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "batch_sizes": list(record.batch_sizes), "device": "cpu", "rows": rows, "summary": summary,
        "stages": dict(record.stages), "parity_data": first.get("data", {}).get("source", record.data),
        "env": dict(_flatten_env(env)), "classes": list(record.classes), "gate": record.gate,
        "split": dict(record.split), "parity": parity_details(parity),
        "failures": [{"stage": name, "error": f.get("error", "")} for name, f in record.failures.items()],
    }
    files = {"html": str(out / "report.html"), "markdown": str(out / "report.md"), "json": str(out / "report.json")}
    write_text(files["html"], render_html(report, plots))
    write_text(files["markdown"], render_markdown(report, plots, out))
    write_result(files["json"], report)
    return report, files


def checkpoint_curves(checkpoint: str | Path | None) -> str | None:
    """A model loaded from a training run still shows that run's curves."""
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
