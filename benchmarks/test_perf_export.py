"""Export time per format (export only, verification off) and the artifact size it produced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench_helpers import describe


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript"])
def test_export_time(benchmark: Any, fmt: str, torch_model: Any, tmp_path: Path) -> None:
    from toolchain.export import ExportConfig, export_model

    outs = iter(tmp_path / f"out-{i}" for i in range(100))
    benchmark.group = "export"
    result = benchmark.pedantic(lambda: export_model(torch_model, ExportConfig(format=fmt, out=next(outs),
                                                                                verify=False)),
                                rounds=2, iterations=1)
    describe(benchmark, stage="export", format=fmt, device="cpu", size_mb=round(result.artifact.size_mb, 3))
