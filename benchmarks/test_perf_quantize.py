"""Quantization time (INT8 PTQ of the bench model's ONNX artifact); skipped until toolchain.quantize exists."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bench_helpers import describe


def test_quantize_time(benchmark: Any, artifact_factory: Callable[[str], Path], tmp_path: Path) -> None:
    quantize_mod = pytest.importorskip("toolchain.quantize")
    if not hasattr(quantize_mod, "QuantConfig") or not hasattr(quantize_mod, "quantize"):
        pytest.skip("toolchain.quantize has no QuantConfig/quantize yet")
    from toolchain.sources import load_model

    model = load_model(str(artifact_factory("onnx")))
    outs = iter(tmp_path / f"int8-{i}" for i in range(100))

    data = None if model.spec.num_classes == 1000 else "digits"  # ImageNet heads calibrate on the bundled photos

    def run() -> Any:
        config = quantize_mod.QuantConfig(mode="ptq", samples=32, min_agreement=0.01, speed=False)
        return quantize_mod.quantize(model, data, config, out=next(outs))

    benchmark.group = "quantize"
    benchmark.pedantic(run, rounds=1, iterations=1)
    describe(benchmark, stage="quantize", mode="ptq", device="cpu", samples=32, data=data or "bundled photos",
             note="includes calibration and the accuracy-budget check, not the speed check")
