"""A failed stage no longer ends the pipeline without a report: it is recorded with its reason, the stages that
do not need it still run, and the report (HTML, Markdown, JSON, terminal) says what failed and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import one_torch_thread, run_cli  # noqa: F401


@pytest.fixture()
def exploding_qat(monkeypatch: pytest.MonkeyPatch) -> None:
    """QAT that crashes the way a third-party library does (not a VtoolError)."""
    import toolchain.pipeline.quant as quant

    def explode(*_: object, **__: object) -> dict:
        raise RuntimeError("prepare_qat_pt2e: unsupported op aten.frobnicate")

    monkeypatch.setattr(quant, "run_quantization", explode)


def test_a_failed_qat_stage_is_on_the_report_and_the_rest_still_runs(exploding_qat: None, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("pipeline", "--model", "tiny-cnn", "--epochs", 1, "--formats", "onnx", "--quantize", "qat",
                     "--batch-size", 1, "--bench-seconds", 0.05, "--out", out, "--json", tmp_path / "p.json")
    assert result.exit_code == 1, result.stderr  # a crash, not a missed gate
    error = "RuntimeError: prepare_qat_pt2e: unsupported op aten.frobnicate"
    assert f"FAILED stage quantize-qat failed: {error}" in result.stdout  # the report table, then why
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stage quantize-qat failed") and "use --mode qat" not in last
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["schema"] == "vtool.pipeline/1" and data["failures"]["quantize-qat"]["error"] == error
    assert data["stages"]["quantize-qat"]["status"] == "failed"
    assert data["stages"]["bench"]["status"] == "ok" and data["stages"]["parity"]["status"] == "ok"
    assert {row["artifact"] for row in data["rows"]} == {"original", "onnx"}
    html = (out / "report.html").read_text()
    assert "class='failures'" in html and "unsupported op aten.frobnicate" in html
    assert "stage quantize-qat failed" in (out / "report.md").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["failures"] == [{"stage": "quantize-qat", "error": error}]
    assert report["classes"] == [str(i) for i in range(10)] and "gate rule 'ci'" in report["gate"]
