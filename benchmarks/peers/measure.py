"""Accuracy against fp32 (agreement with a Wilson interval, logit SQNR, top-1) and interleaved latency.

Latency on a shared machine: every model is loaded and warmed up first, then each round times every
(model, runtime) once, in turn, so a burst of load from other jobs hits all of them alike; medians
over the rounds. Ratios from one such run are what hold, not the milliseconds.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

Z95 = 1.959964


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score 95% interval of a binomial rate (stays inside [0, 1], sane at 0 or n successes)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """Top-1 agreement with fp32 (+ Wilson 95%), logit SQNR, cosine and, with labels, top-1 accuracy."""
    from toolchain.metrics import compare_logits

    metrics = compare_logits(reference, logits, labels)
    n = metrics["n"]
    agree = int(round(metrics["agreement"] * n))
    low, high = wilson(agree, n)
    return {"n": n, "agreement": metrics["agreement"], "agreement_ci95": [round(low, 4), round(high, 4)],
            "sqnr_db": metrics["sqnr_db"], "cosine_mean": metrics["cosine_mean"], "top1": metrics["top1_cand"],
            "top1_fp32": metrics["top1_ref"]}


def logits_of(path: Path, spec: Any, x: np.ndarray, runtime: str, threads: int) -> np.ndarray:
    """Logits of model file `path` on `x` through a vtool Runner."""
    from toolchain.runners import run_model

    return run_model(path, x, runtime, spec=spec, threads=threads)


def tile(x: np.ndarray, batch: int) -> np.ndarray:
    """A batch of `batch` images cycling through `x`."""
    from toolchain.bench.inputs import tile_batch

    return np.ascontiguousarray(tile_batch(x, batch), dtype=np.float32)


def interleaved_latency(models: dict[str, tuple[Path, str]], spec: Any, x: np.ndarray, threads: int, rounds: int,
                        warmup: int) -> dict[str, dict[str, Any]]:
    """Per name: p50 / p25 / p75 / min ms of `rounds` interleaved calls on batch `x` (each model warmed up first).

    A model that a runtime cannot load gets {"error": ...} instead of figures.
    """
    from toolchain.bench.timing import timed_call
    from toolchain.runners import get_runner

    runners: dict[str, Any] = {}
    errors: dict[str, str] = {}
    try:
        for name, (path, runtime) in models.items():
            runner = get_runner(runtime, path, spec=spec, threads=threads)
            try:
                runner.load()
                for _ in range(warmup):
                    runner.infer(x)
            except Exception as exc:  # noqa: BLE001 - e.g. a runtime that rejects one tool's graph
                errors[name] = f"{type(exc).__name__}: {str(exc)[:160]}"
                runner.close()
                continue
            runners[name] = runner
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(rounds):
            for name, runner in runners.items():
                times[name].append(1000.0 * timed_call(lambda r=runner: r.infer(x), runner.synchronize))
    finally:
        for runner in runners.values():
            runner.close()
    result: dict[str, dict[str, Any]] = {name: {"error": error} for name, error in errors.items()}
    for name, values in times.items():
        q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
        result[name] = {"p50_ms": statistics.median(values), "p25_ms": q1, "p75_ms": q3, "min_ms": min(values),
                        "rounds": len(values)}
    return result
