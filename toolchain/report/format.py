"""Cell formatting shared by every table, Markdown and HTML report (numbers rounded for reading)."""

from __future__ import annotations

from typing import Any


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def fmt_speedup(speedup: float | None, is_ref: bool) -> str:
    if is_ref:
        return "1.00x (ref)"
    return "n/a" if speedup is None else f"{speedup:.2f}x"


def fmt_threads(value: int | None) -> str:
    return "auto" if value is None else str(value)


def fmt_batch(entry: dict[str, Any]) -> str:
    """'32', or '32 x4' for 4 concurrent requests of batch 32."""
    conc = int(entry.get("concurrency", 1))
    return str(entry["batch_size"]) + (f" x{conc}" if conc > 1 else "")


def fmt_metric(value: Any, digits: int = 4) -> str:
    """A metric cell: '-' when missing, small values in 3 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    return str(value)


def fmt_cell(value: Any, key: str = "") -> str:
    """One pipeline report cell: numbers rounded by column, missing values as an en dash, pass/FAIL."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    if isinstance(value, float):
        if key in ("accuracy", "agreement"):
            return f"{value:.4f}"
        if key == "top1_delta":
            return f"{value * 100:+.2f} pt"
        if key == "speedup":
            return f"{value:.2f}x"
        if key == "throughput_ips":
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def markdown_table(headers: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    """A Markdown table of string cells (a | inside a cell becomes /)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)
