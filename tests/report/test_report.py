"""toolchain.report: strict atomic JSON for every --json, the result views, the pipeline page."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from toolchain.compare import Thresholds
from toolchain.metrics import compare_logits
from toolchain.parity import ParityResult
from toolchain.report import jsonable, write_result, write_text
from toolchain.report.format import fmt_cell, fmt_metric, markdown_table
from toolchain.report.pipeline import columns, render_html, render_markdown
from toolchain.report.tables import parity_view


def text_of(view: list) -> str:
    console = Console(record=True, width=160)
    for item in view:
        console.print(item)
    return console.export_text()


def test_write_result_is_strict_json_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "r.json"
    write_result(target, {"sqnr_db": math.inf, "n": np.int64(3), "x": np.float32(0.5), "t": (1, float("nan")),
                          "p": Path("a/b")})
    data = json.loads(target.read_text())  # strict: no Infinity / NaN literals
    assert data == {"sqnr_db": "inf", "n": 3, "x": 0.5, "t": [1, "nan"], "p": "a/b"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["r.json"]  # no temp file left
    assert write_text(tmp_path / "r.md", "# hi\n").read_text() == "# hi\n"


def test_jsonable_handles_infinities() -> None:
    data = jsonable({"sqnr_db": math.inf, "x": [float("nan"), 1.0], "low": -math.inf})
    assert data == {"sqnr_db": "inf", "x": ["nan", 1.0], "low": "-inf"}
    json.dumps(data, allow_nan=False)


def test_cell_formats() -> None:
    assert fmt_metric(None) == "-" and fmt_metric(0.00012) == "0.00012" and fmt_metric(0.5) == "0.5000"
    assert fmt_cell(None) == "–" and fmt_cell(True) == "pass" and fmt_cell(False) == "FAIL"
    assert fmt_cell(-0.0125, "top1_delta") == "-1.25 pt" and fmt_cell(2.5, "speedup") == "2.50x"
    assert markdown_table(["a", "b"], [["1", "x|y"]]) == "| a | b |\n|---|---|\n| 1 | x/y |"


@pytest.fixture()
def failed_parity() -> ParityResult:
    ref = np.eye(3)[[0, 1, 2, 0]] * 3.0
    cand = np.eye(3)[[0, 2, 2, 0]] * 3.0
    metrics = compare_logits(ref, cand, np.array([0, 1, 2, 0]), ("cat", "dog", "fox"))
    return ParityResult(metrics, Thresholds(0.01, 0.99, rule="observed"), reference={"name": "ref", "runner": "torch"},
                        candidate={"name": "int8", "runner": "onnxruntime"})


def test_parity_view_shows_thresholds_flips_and_the_verdict(failed_parity: ParityResult) -> None:
    text = text_of(parity_view(failed_parity))
    assert "parity: ref (torch) vs int8 (onnxruntime), n=4" in text
    assert "max drop 0.01" in text and "min 0.99" in text and "dog: 1" in text
    assert "FAILED: top-1 fell 0.2500 (1.0000 -> 0.7500)" in text
    assert not failed_parity and "flipped classes: dog (1)" in failed_parity.message()
    assert failed_parity.to_dict()["thresholds"] == {"max_drop": 0.01, "min_agreement": 0.99, "max_abs_diff": None,
                                                     "rule": "observed"}
    assert "1 flip of 4" in text and "gate rule 'observed'" in text


def test_parity_view_says_when_a_pass_is_inconclusive(failed_parity: ParityResult) -> None:
    labels = np.arange(54) % 3
    cand = labels.copy()
    cand[1] = 2
    metrics = compare_logits(np.eye(3)[labels], np.eye(3)[cand], labels, ("cat", "dog", "fox"))
    lenient = ParityResult(metrics, Thresholds(0.01, 0.99), reference=failed_parity.reference,
                           candidate=failed_parity.candidate)
    text = text_of(parity_view(lenient))
    assert lenient and "PASSED (inconclusive)" in text and "inconclusive: agreement 0.9815" in text
    assert "gate rule 'ci'" in text and "95% CI [" in text


def test_pipeline_page_and_markdown_lay_out_the_rows(tmp_path: Path) -> None:
    rows = [{"artifact": "original", "runner": "torch", "format": "torch", "precision": "fp32", "size_mb": 0.75,
             "p50_b1_ms": 0.4, "throughput_ips": 4500.0, "speedup": 1.0, "accuracy": 0.974, "top1_delta": None,
             "agreement": None, "passed": None},
            {"artifact": "int8-ptq", "runner": "onnxruntime", "format": "onnx", "precision": "int8",
             "size_mb": 0.21, "p50_b1_ms": 0.07, "throughput_ips": 19000.0, "speedup": 4.3, "accuracy": 0.974,
             "top1_delta": 0.0, "agreement": 1.0, "passed": True}]
    report = {"run": "cnn-digits", "model": "simple-cnn", "data": "digits", "batch_sizes": [1], "rows": rows,
              "summary": {"artifacts": 1}, "stages": {"train": {"status": "ok", "seconds": 1.5}}, "env": {"cpu": "x"}}
    page = render_html(report, {"curves": None})
    assert "<title>vtool report: cnn-digits</title>" in page and "<td>int8-ptq</td><td>onnxruntime</td>" in page
    assert "<td class='pass'>pass</td>" in page and "(Training and validation loss / accuracy: not produced)" in page
    md = render_markdown(report, {}, tmp_path)
    assert "| artifact | runner | format |" in md and "| int8-ptq | onnxruntime | onnx | int8 |" in md
    assert [key for key, _ in columns([1, 32])][5:7] == ["p50_b1_ms", "p50_b32_ms"]
