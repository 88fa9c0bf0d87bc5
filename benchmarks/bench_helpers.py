"""Helpers shared by the benchmark suites (a plain module: `conftest` names clash between tests/ and benchmarks/)."""

from __future__ import annotations

import os
from typing import Any


def bench_model_name() -> str:
    return os.environ.get("VTOOL_BENCH_MODEL", "tiny-cnn")


def bench_batch_sizes() -> list[int]:
    return [int(b) for b in os.environ.get("VTOOL_BENCH_BATCHES", "1,8").split(",") if b.strip()]


def describe(benchmark: Any, **info: Any) -> None:
    """Record what was measured next to the numbers in --benchmark-json."""
    from toolchain.envinfo import cpu_model

    benchmark.extra_info.update({"model": bench_model_name(), "cpu": cpu_model(), **info})
