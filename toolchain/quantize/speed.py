"""A quick in-process speed ratio (INT8 vs fp32), interleaved rounds, medians: ratios hold on shared machines.

The clock is read through toolchain.bench.timing (the one place vtool times inference).
"""

from __future__ import annotations

import logging
import statistics
from typing import Any

import numpy as np

from toolchain.models import LoadedModel

log = logging.getLogger(__name__)


def speed_ratio(models: dict[str, tuple[LoadedModel, str]], x: np.ndarray, threads: int | None = None,
                rounds: int = 15, warmup: int = 3) -> dict[str, Any]:
    """Median latency (ms) of each named (model, runner) on batch `x`, measured in interleaved rounds."""
    from toolchain.bench.timing import timed_call
    from toolchain.runners import get_runner

    runners = {name: get_runner(backend, model, threads=threads) for name, (model, backend) in models.items()}
    times: dict[str, list[float]] = {name: [] for name in runners}
    try:
        for runner in runners.values():
            runner.load()
            for _ in range(warmup):
                runner.infer(x)
        for _ in range(rounds):
            for name, runner in runners.items():
                times[name].append(timed_call(lambda r=runner: r.infer(x), runner.synchronize))
    finally:
        for runner in runners.values():
            runner.close()
    medians = {name: statistics.median(v) * 1000.0 for name, v in times.items()}
    return {"batch": int(len(x)), "threads": threads, "rounds": rounds, "median_ms": medians,
            "runners": {name: backend for name, (_, backend) in models.items()}}
