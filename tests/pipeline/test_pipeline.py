"""vtool pipeline: a small real run, re-run skipping, the HTML report in a real browser, bad input."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import run_cli

from toolchain.errors import UserInputError
from toolchain.pipeline import PipelineConfig, run_pipeline

# Core formats only: the edge formats have their own run in test_pipeline_edge.py.
FAST = dict(model="tiny-cnn", data="digits", epochs=1, formats=["onnx", "pt2", "torchscript"], quantize=[],
            batch_sizes=[1, 4], bench_seconds=0.05)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("pipe") / "run"
    first = run_pipeline(PipelineConfig(out=out, **FAST))
    return out, first


def test_pipeline_writes_every_artifact_and_report(tiny_run) -> None:
    out, result = tiny_run
    for name in ("train/best.pt", "onnx/model.onnx", "pt2/model.pt2", "torchscript/model.ts", "bench.json",
                 "parity.json", "report.html", "report.md", "pipeline.json"):
        assert (out / name).is_file(), name
    rows = result.report["rows"]
    assert {r["artifact"] for r in rows} >= {"original", "onnx", "pt2", "torchscript"}
    assert all(r["passed"] for r in rows if r["artifact"] != "original")
    assert all(r["p50_b1_ms"] and r["p50_b4_ms"] for r in rows)
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    assert not list(out.glob(".*tmp*")), "temp dirs left behind"


def test_rerun_with_nothing_changed_skips_every_stage(tiny_run) -> None:
    out, _ = tiny_run
    again = run_pipeline(PipelineConfig(out=out, **FAST))
    assert {s["status"] for s in again.stages.values()} == {"skipped"}
    changed = run_pipeline(PipelineConfig(out=out, **{**FAST, "batch_sizes": [1, 2]}))
    assert changed.stages["bench"]["status"] == "ok"
    assert changed.stages["export-onnx"]["status"] == "skipped"


def test_report_renders_in_headless_chromium(tiny_run, tmp_path: Path) -> None:
    """The page Chromium rendered is our report (its title and artifact rows), not a browser error page."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    out, result = tiny_run
    page = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                           (out / "report.html").resolve().as_uri()],
                          check=True, capture_output=True, text=True, timeout=120).stdout
    run = result.report["run"]
    assert f"<title>vtool report: {run}</title>" in page and f"<h1>vtool report: {run}</h1>" in page
    body = page.split("<h2>Artifacts</h2>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td>", body)
    assert {artifact for artifact, _ in rows} == {"original", "onnx", "pt2", "torchscript"}, rows
    assert ("onnx", "onnxruntime") in rows and page.count("class='pass'") + page.count('class="pass"') >= 3
    assert page.count("data:image/png;base64,") >= 2  # the plots are embedded in the page itself


def test_unknown_stage_and_unwritable_out(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="Unknown stage 'trian'.*Did you mean 'train'"):
        PipelineConfig(stages=["trian"], out=tmp_path / "x")
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(UserInputError, match="not writable"):
        PipelineConfig(out=blocker / "run")


def test_cli_model_data_mismatch_is_one_line_exit_1(tmp_path: Path) -> None:
    module = tmp_path / "grey.py"
    module.write_text(
        "from torch import nn\n"
        "class GreyNet(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),"
        " nn.Linear(4, num_classes))\n"
        "    def forward(self, x):\n"
        "        return self.body(x)\n"
    )
    result = run_cli("pipeline", "--model", f"{module}:GreyNet", "--out", tmp_path / "r")
    assert result.exit_code == 1, result.output
    assert "cannot read 3-channel" in result.output
    assert "Traceback" not in result.output


def test_cli_unknown_stage_exit_1(tmp_path: Path) -> None:
    result = run_cli("pipeline", "--stages", "train,bogus", "--out", tmp_path / "r")
    assert result.exit_code == 1
    assert "Unknown stage 'bogus'" in result.output
