"""The peers table: one row per tool, as a rich Table for the terminal and as Markdown for notes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .emulated import ACCURACY_KEY as AVX2

RUNTIME_SHORT = {"onnxruntime": "ORT", "openvino": "OV"}


def _agreement(acc: dict[str, Any] | None) -> str:
    """Agreement with its Wilson interval, or the runtime's error."""
    if not acc or "agreement" not in acc:
        error = (acc or {}).get("error", "-")
        return "n/a (ORT contrib ops)" if "contrib ops" in error else error[:40]
    low, high = acc["agreement_ci95"]
    return f"{acc['agreement']:.3f} [{low:.3f}, {high:.3f}]"


def _sqnr(acc: dict[str, Any] | None) -> str:
    """Logit SQNR in dB."""
    if not acc or acc.get("sqnr_db") is None:
        return "-"
    value = acc["sqnr_db"]
    return "inf" if value == float("inf") else f"{value:.1f}"


def _speed(row: dict[str, Any], runtime: str, batch: int) -> str:
    """p50 ms and its ratio to fp32 in ONNX Runtime."""
    entry = row["speed"].get(runtime, {}).get(str(batch))
    if not entry:
        return "-"
    if "error" in entry:
        return "n/a" if "contrib ops" in entry["error"] else "error"
    ratio = entry.get("speedup_vs_fp32_ort")
    return f"{entry['p50_ms']:.1f} ({ratio:.2f}x)" if ratio else f"{entry['p50_ms']:.1f}"


def _layers(row: dict[str, Any]) -> str:
    """The float-layers cell."""
    layers = row.get("layers")
    if row["key"] == "fp32":
        return f"all {layers['total']} (fp32)" if layers else "fp32"
    return layers["label"] if layers else "-"


def columns(case: dict[str, Any], runtimes: list[str], batches: list[int]) -> list[str]:
    """The table header for this case's runtimes and batch sizes."""
    cols = ["tool", "float layers", "agreement [95% CI]", "SQNR dB"]
    if case["checks"].get("labelled"):
        cols.append("top-1")
    cols += [f"agree {RUNTIME_SHORT.get(r, r)}" for r in runtimes if r != "onnxruntime"]
    if _emulated(case):
        cols += ["agree ORT on AVX2 (qemu)", "SQNR dB AVX2"]
    cols += [f"{RUNTIME_SHORT.get(r, r)} b{b} ms (x fp32 ORT)" for r in runtimes for b in batches]
    return cols + ["note"]


def _emulated(case: dict[str, Any]) -> bool:
    """Whether this case was also judged on the emulated AVX2 CPU (run.py --emulate-avx2)."""
    return any(AVX2 in row["accuracy"] for row in case["rows"])


def cells(case: dict[str, Any], row: dict[str, Any], runtimes: list[str], batches: list[int]) -> list[str]:
    """One row's table cells, in `columns` order."""
    ort = row["accuracy"].get("onnxruntime")
    tool = row["tool"] + (" *" if row.get("budget_missed") else "")
    values = [tool, _layers(row), _agreement(ort), _sqnr(ort)]
    if case["checks"].get("labelled"):
        values.append(f"{ort['top1']:.4f}" if ort and ort.get("top1") is not None else "-")
    values += [_agreement(row["accuracy"].get(r)) for r in runtimes if r != "onnxruntime"]
    if _emulated(case):
        values += [_agreement(row["accuracy"].get(AVX2)), _sqnr(row["accuracy"].get(AVX2))]
    values += [_speed(row, r, b) for r in runtimes for b in batches]
    return values + [row.get("note", "")]


def case_title(case: dict[str, Any], env: dict[str, Any]) -> str:
    """Table title: data sizes, CPU flags, threads and load before timing."""
    checks = case["checks"]
    return (f"{case['model']}: {checks['calibration_images']} calibration images, {checks['judging_images']} judging "
            f"images{' (labelled)' if checks['labelled'] else ''}; CPU flags {' '.join(env['cpu_flags'])}; "
            f"{env['threads']} threads; load {case['load_avg']['before_timing'][0]:.1f} before timing")


def rich_table(case: dict[str, Any], env: dict[str, Any]) -> Any:
    """The case as a rich Table for the terminal."""
    from rich.table import Table

    runtimes, batches = env["runtimes"], env["batches"]
    table = Table(title=case_title(case, env), title_justify="left")
    for name in columns(case, runtimes, batches):
        table.add_column(name, justify="left" if name in ("tool", "float layers", "note") else "right",
                         overflow="fold")
    for row in case["rows"]:
        table.add_row(*cells(case, row, runtimes, batches))
    return table


def markdown_table(case: dict[str, Any], env: dict[str, Any]) -> str:
    """The case as a Markdown table with a bold title."""
    runtimes, batches = env["runtimes"], env["batches"]
    head = columns(case, runtimes, batches)
    lines = [f"**{case_title(case, env)}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in case["rows"]:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells(case, row, runtimes, batches)) + " |")
    return "\n".join(lines)


def footnotes(case: dict[str, Any]) -> list[str]:
    """Notes under the table: weights, vtool's own summary, data-sharing checks."""
    notes = list(case["notes"])
    if _emulated(case):
        notes.append("AVX2 columns: ONNX Runtime under qemu-x86_64 -cpu Haswell-v4 (AVX2, no VNNI: u8*s8 pairs "
                     "saturate in int16), judged against the native fp32 logits; accuracy only, never speed.")
    if any(r.get("budget_missed") for r in case["rows"]):
        notes.append("* vtool's budget was missed (QuantBudgetError): the row is its best candidate, rebuilt.")
    for row in case["rows"]:
        summary = row["info"].get("float_summary")
        if summary:
            notes.append(f"{row['tool']}: vtool reports {summary}; steps: {', '.join(row['info'].get('steps', []))}")
    checks = {k: v for k, v in case["checks"].items() if k.endswith(("same_calibration", "same_judging_count"))}
    if checks:
        notes.append("data shared with vtool's own budget: " + ", ".join(f"{k}={v}" for k, v in checks.items()))
    return notes


def write_json(result: dict[str, Any], path: Path) -> Path:
    """Write `result` to `path` atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(path)
    return path
