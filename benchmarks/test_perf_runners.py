"""Runner inference per backend and batch size (the same Runner.infer + synchronize that vtool bench times)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_helpers import bench_batch_sizes, describe

from toolchain.bench.inputs import tile_batch

RUNNER_FORMATS = {"torch": "torch", "torch-compile": "torch", "onnxruntime": "onnx", "openvino": "onnx",
                  "pt2": "pt2", "torchscript": "torchscript"}


def model_for(runner: str, torch_model: Any, artifact_factory: Callable[[str], Path]) -> Any:
    from toolchain.runners import installed_runners
    from toolchain.sources import load_model

    if runner not in installed_runners():
        pytest.skip(f"backend {runner} is not installed")
    fmt = RUNNER_FORMATS[runner]
    return torch_model if fmt == "torch" else load_model(str(artifact_factory(fmt)))


@pytest.mark.parametrize("batch", bench_batch_sizes())
@pytest.mark.parametrize("runner_name", list(RUNNER_FORMATS))
def test_runner_inference(benchmark: Any, runner_name: str, batch: int, torch_model: Any,
                          artifact_factory: Callable[[str], Path], image_pool: np.ndarray) -> None:
    from toolchain.runners import get_runner

    model = model_for(runner_name, torch_model, artifact_factory)
    x = tile_batch(image_pool, batch)
    benchmark.group = f"inference b{batch}"
    with get_runner(runner_name, model, device="cpu") as runner:
        for _ in range(3):  # compile / first-call work is not what this measures
            runner.infer(x)

        def call() -> None:
            runner.infer(x)
            runner.synchronize()

        benchmark(call)
    describe(benchmark, runner=runner_name, device="cpu", batch=batch, format=RUNNER_FORMATS[runner_name],
             images_per_s=round(batch / benchmark.stats.stats.median, 2))
