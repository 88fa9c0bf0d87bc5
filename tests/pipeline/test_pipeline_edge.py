"""The pipeline with the edge extra: .pte and IR artifacts, the xnnpack INT8, and what it says without them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from toolchain.errors import MissingDependencyError
from toolchain.pipeline import PipelineConfig, run_pipeline
from toolchain.pipeline.config import CORE_FORMATS


def _hide(monkeypatch: pytest.MonkeyPatch, *packages: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name in packages else real(name))


def test_without_the_extra_defaults_leave_edge_out_and_say_so(monkeypatch, tmp_path: Path) -> None:
    _hide(monkeypatch, "executorch", "openvino")
    config = PipelineConfig(model="tiny-cnn", out=tmp_path / "run", stages=["export"], formats=["onnx"], quantize=[])
    assert PipelineConfig(out=tmp_path / "d").formats == list(CORE_FORMATS)
    assert "xnnpack" not in PipelineConfig(out=tmp_path / "d").quantize
    with pytest.raises(MissingDependencyError, match=r"'executorch' needs .*pip install 'vtool\[edge\]'"):
        PipelineConfig(out=tmp_path / "e", formats=["onnx", "executorch"])
    said: list[str] = []
    run_pipeline(config, notify=said.append)
    assert any("no executorch, openvino, xnnpack: pip install 'vtool[edge]'" in m for m in said), said


def test_with_the_extra_edge_artifacts_are_exported_benched_and_checked(tmp_path: Path) -> None:
    pytest.importorskip("executorch", reason="the edge extra is not installed (pip install 'vtool[edge]')")
    pytest.importorskip("openvino", reason="the edge extra is not installed (pip install 'vtool[edge]')")
    assert {"executorch", "openvino"} <= set(PipelineConfig(out=tmp_path / "d").formats)
    config = PipelineConfig(model="tiny-cnn", data="digits", epochs=1, formats=["executorch", "openvino"],
                            quantize=["xnnpack"], batch_sizes=[1, 4], bench_seconds=0.05, out=tmp_path / "run")
    result = run_pipeline(config)
    for name in ("executorch/model.pte", "openvino/model.xml", "openvino/model.bin", "int8-xnnpack/model.pte"):
        assert (tmp_path / "run" / name).is_file(), name
    rows = {r["artifact"]: r for r in result.report["rows"]}
    assert {"executorch", "openvino", "int8-xnnpack"} <= set(rows)
    assert all(rows[name]["passed"] for name in ("executorch", "openvino", "int8-xnnpack"))
    assert rows["int8-xnnpack"]["p50_b4_ms"]
