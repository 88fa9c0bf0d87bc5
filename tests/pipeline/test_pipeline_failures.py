"""A failed stage no longer ends the pipeline without a report: it is recorded with its reason, the stages that
do not need it still run, and the report (HTML, Markdown, JSON, terminal) says what failed and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import one_torch_thread, run_cli  # noqa: F401

from toolchain.pipeline import PipelineConfig, run_pipeline

FAST = dict(model="tiny-cnn", data="digits", epochs=1, formats=["onnx"], quantize=["qat"], batch_sizes=[1],
            bench_seconds=0.05)


@pytest.fixture()
def exploding_qat(monkeypatch: pytest.MonkeyPatch) -> None:
    """QAT that crashes the way a third-party library does (not a VtoolError)."""
    import toolchain.pipeline.quant as quant

    def explode(*_: object, **__: object) -> dict:
        raise RuntimeError("prepare_qat_pt2e: unsupported op aten.frobnicate")

    monkeypatch.setattr(quant, "run_quantization", explode)


def test_a_failed_qat_stage_is_on_the_report_and_the_rest_still_runs(exploding_qat: None, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_pipeline(PipelineConfig(out=out, **FAST))
    assert not result and result.exit_code == 1
    assert result.failures["quantize-qat"]["error"] == ("RuntimeError: prepare_qat_pt2e: unsupported op "
                                                        "aten.frobnicate")
    assert result.stages["quantize-qat"]["status"] == "failed"
    assert result.stages["bench"]["status"] == "ok" and result.stages["parity"]["status"] == "ok"
    assert "use --mode qat" not in result.message() and "stage quantize-qat failed" in result.message()
    html = (out / "report.html").read_text()
    assert "class='failures'" in html and "unsupported op aten.frobnicate" in html
    assert "stage quantize-qat failed" in (out / "report.md").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["failures"] == [{"stage": "quantize-qat",
                                   "error": "RuntimeError: prepare_qat_pt2e: unsupported op aten.frobnicate"}]
    assert report["classes"] == [str(i) for i in range(10)] and "gate rule 'ci'" in report["gate"]
    assert {row["artifact"] for row in report["rows"]} == {"original", "onnx"}


def test_cli_exit_code_and_the_failure_on_the_terminal(exploding_qat: None, tmp_path: Path) -> None:
    result = run_cli("pipeline", "--model", "tiny-cnn", "--epochs", 1, "--formats", "onnx", "--quantize", "qat",
                     "--batch-size", 1, "--bench-seconds", 0.05, "--out", tmp_path / "run", "--json",
                     tmp_path / "p.json")
    assert result.exit_code == 1, result.stderr
    assert "FAILED stage quantize-qat failed: RuntimeError" in result.stdout  # the report table, then why
    assert result.stderr.strip().splitlines()[-1].startswith("error: stage quantize-qat failed")
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["schema"] == "vtool.pipeline/1" and "quantize-qat" in data["failures"]
    assert (tmp_path / "run" / "report.html").is_file()
