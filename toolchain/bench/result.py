"""Bench result shapes (DESIGN.md section 4): one BenchEntry per (model, runner, batch size, concurrency)."""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolchain.errors import UserInputError

SCHEMA = "vtool.bench/1"


@dataclass
class BenchEntry:
    """One measured (model, runner, batch size, concurrency) point.

    latency_ms: per request (one batch), device work and (CUDA) host<->device copies included.
    throughput_ips: images/s over the measured wall time (concurrent: all threads together).
    load_s: runner creation + load() (session creation, compilation setup), once per (model, runner).
    first_infer_ms: the first call at this batch size after load (lazy compilation shows up here).
    compile_s: for runners that compile on the first call (torch-compile), that first call in seconds: compile
    time, reported as such and never part of latency_ms (None for other runners).
    warmup_iterations: calls before measuring, the first call included.
    peak_rss_mb: process high-water mark since this runner was created (peak_rss_scope says when the
    kernel could not reset it). cuda_peak_mb: PyTorch's CUDA allocator only.
    """

    model: str
    runner: str
    batch_size: int
    concurrency: int
    device: str
    threads: int | None
    format: str
    precision: str
    latency_ms: dict[str, float]
    throughput_ips: float
    cv: float
    iterations: int
    warmup_iterations: int
    warmup_s: float
    warmup_stable: bool
    measure_s: float
    load_s: float
    first_infer_ms: float
    peak_rss_mb: float | None
    model_size_mb: float | None
    params: int | None
    macs: int | None
    includes_h2d: bool
    inputs: str
    mode: str = "sequential"
    peak_rss_scope: str = "since runner load"
    cuda_peak_mb: float | None = None
    compile_s: float | None = None
    high_cv: bool = False
    source: str = ""
    backend_info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, int, int, str]:
        return entry_key(asdict(self))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def entry_key(entry: dict[str, Any]) -> tuple[str, str, int, int, str]:
    """What makes two entries comparable across runs."""
    return (entry["model"], entry["runner"], int(entry["batch_size"]), int(entry.get("concurrency", 1)),
            entry.get("device", "cpu"))


def entry_label(entry: dict[str, Any]) -> str:
    conc = int(entry.get("concurrency", 1))
    return f"{entry['model']} / {entry['runner']} / b{entry['batch_size']}" + (f" x{conc}" if conc > 1 else "")


@dataclass
class BenchResult:
    entries: list[BenchEntry]
    env: dict[str, Any]
    config: dict[str, Any]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    created: str = ""

    def __post_init__(self) -> None:
        if not self.created:
            self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    @property
    def warnings(self) -> list[str]:
        return [f"{entry_label(e.to_dict())}: cv {e.cv:.2f} is high; timings are noisy" for e in self.entries
                if e.high_cv]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "created": self.created, "config": self.config, "env": self.env,
                "entries": [e.to_dict() for e in self.entries], "skipped": self.skipped, "notes": self.notes,
                "warnings": self.warnings}


def load_result(path: str | Path) -> dict[str, Any]:
    """Read a bench JSON written by `vtool bench --json`; anything else is a one-line error."""
    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"Bench result '{file}' does not exist; write one with `vtool bench --json {file}`.")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"'{file}' is not valid JSON ({exc}); expected a `vtool bench --json` file.") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise UserInputError(f"'{file}' has no 'entries' list; expected a `vtool bench --json` file.")
    for number, entry in enumerate(data["entries"], 1):
        if not isinstance(entry, dict) or not {"model", "runner", "batch_size", "latency_ms"} <= set(entry):
            raise UserInputError(f"'{file}' has a malformed entry; expected a `vtool bench --json` file.")
        latency = entry["latency_ms"]
        p50 = latency.get("p50") if isinstance(latency, dict) else None
        # A NaN, zero or missing p50 would make every comparison pass (or fail) silently: refuse to judge it.
        if isinstance(p50, bool) or not isinstance(p50, (int, float)) or not math.isfinite(p50) or p50 <= 0:
            raise UserInputError(f"'{file}' entry {number} ({entry.get('model')} / {entry.get('runner')}) has p50 "
                                 f"latency {p50!r}; a comparison needs a finite p50 > 0 ms. Re-run `vtool bench "
                                 "--json` to get a valid result.")
        try:
            int(entry["batch_size"]), int(entry.get("concurrency", 1))
        except (TypeError, ValueError):
            raise UserInputError(f"'{file}' entry {number} has a non-numeric batch size or concurrency.") from None
    return data


def rank_entries(entries: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float | None, bool]]:
    """Entries sorted fastest first within each (batch size, concurrency) group, with their speedup
    over that group's reference: the first entry measured at that batch size and concurrency.

    Speedup = entry throughput / reference throughput (images/s; at concurrency 1 that is the mean-latency ratio)."""
    references: dict[tuple[int, int], dict[str, Any]] = {}
    for entry in entries:
        references.setdefault((int(entry["batch_size"]), int(entry.get("concurrency", 1))), entry)
    ranked = []
    for entry in sorted(entries, key=lambda e: (int(e["batch_size"]), int(e.get("concurrency", 1)),
                                                -float(e["throughput_ips"]))):
        ref = references[(int(entry["batch_size"]), int(entry.get("concurrency", 1)))]
        base = float(ref["throughput_ips"])
        speedup = float(entry["throughput_ips"]) / base if base > 0 else None
        ranked.append((entry, speedup, entry is ref))
    return ranked
