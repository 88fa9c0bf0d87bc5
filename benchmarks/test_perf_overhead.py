"""Measurement overhead: vtool bench's ONNX Runtime p50 vs a plain `session.run` loop, same process.

Both are interleaved round by round so a busy machine slows them alike. Acceptance: vtool's p50 is
within 5% of the plain loop's (or within 0.05 ms for tiny models whose whole call is microseconds).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
from bench_helpers import describe

from toolchain.bench.inputs import tile_batch

ROUNDS = 5
CALLS = 60


def plain_p50_ms(session: Any, name: str, x: np.ndarray) -> float:
    for _ in range(10):
        session.run(None, {name: x})
    times = []
    for _ in range(CALLS):
        start = perf_counter()
        session.run(None, {name: x})
        times.append(perf_counter() - start)
    return statistics.median(times) * 1e3


def vtool_p50_ms(model: Any, x_batch: int) -> float:
    from toolchain.bench import BenchConfig, WarmupPolicy, benchmark

    config = BenchConfig(backends=["onnxruntime"], batch_sizes=[x_batch], iterations=CALLS,
                         warmup=WarmupPolicy(min_iterations=10, min_s=0.0, window=5))
    return benchmark([model], config).entries[0].latency_ms["p50"]


def test_overhead_vs_plain_session_run(benchmark: Any, artifact_factory: Callable[[str], Path],
                                       image_pool: np.ndarray) -> None:
    import onnxruntime as ort

    from toolchain.sources import load_model

    model = load_model(str(artifact_factory("onnx")))
    session = ort.InferenceSession(str(model.artifact.model_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = tile_batch(image_pool, 1)
    plain, vtool = [], []

    def interleaved() -> None:
        for _ in range(ROUNDS):
            plain.append(plain_p50_ms(session, name, x))
            vtool.append(vtool_p50_ms(model, 1))

    benchmark.group = "overhead"
    benchmark.pedantic(interleaved, rounds=1, iterations=1)
    plain_ms, vtool_ms = statistics.median(plain), statistics.median(vtool)
    ratio = vtool_ms / plain_ms
    describe(benchmark, runner="onnxruntime", device="cpu", batch=1, plain_p50_ms=round(plain_ms, 4),
             vtool_p50_ms=round(vtool_ms, 4), ratio=round(ratio, 4), rounds_plain=plain, rounds_vtool=vtool)
    assert ratio <= 1.05 or vtool_ms - plain_ms <= 0.05, f"vtool p50 {vtool_ms:.3f} ms vs plain {plain_ms:.3f} ms"


def test_runner_call_vs_session_run(benchmark: Any, artifact_factory: Callable[[str], Path],
                                    image_pool: np.ndarray) -> None:
    """The bare cost of Runner.infer (input check + contiguity) next to test_session_run in one group."""
    from toolchain.runners import get_runner
    from toolchain.sources import load_model

    x = tile_batch(image_pool, 1)
    with get_runner("onnxruntime", load_model(str(artifact_factory("onnx")))) as runner:
        benchmark.group = "overhead b1"
        benchmark(runner.infer, x)
    describe(benchmark, runner="onnxruntime", device="cpu", batch=1, path="vtool Runner.infer")


def test_session_run(benchmark: Any, artifact_factory: Callable[[str], Path], image_pool: np.ndarray) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(artifact_factory("onnx") / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = tile_batch(image_pool, 1)
    benchmark.group = "overhead b1"
    benchmark(session.run, None, {name: x})
    describe(benchmark, runner="plain onnxruntime", device="cpu", batch=1, path="session.run")
