"""Benchmarking: BenchConfig -> benchmark(models, config) -> BenchResult (DESIGN.md sections 2-4).

Timing lives only in this package (perf_counter; runner.synchronize() before reading the clock).
    config.py         BenchConfig, WarmupPolicy (validated)
    timing.py         warm-up, measurement loops, concurrency, statistics, peak memory
    core.py           benchmark(): plan backends, load runners, measure entries
    result.py         BenchEntry / BenchResult (JSON keys), ranking and speedups
    compare.py        old vs new result: per-entry change, regression gate
    preprocessing.py  decode + resize + normalize throughput (PIL vs torchvision v2)
"""

from __future__ import annotations

from toolchain.bench.compare import Comparison, compare_results
from toolchain.bench.config import BenchConfig, WarmupPolicy
from toolchain.bench.core import benchmark, default_models, plan_backends
from toolchain.bench.result import BenchEntry, BenchResult, load_result, rank_entries

__all__ = [
    "BenchConfig", "WarmupPolicy", "BenchEntry", "BenchResult", "Comparison", "benchmark", "compare_results",
    "default_models", "load_result", "plan_backends", "rank_entries",
]
