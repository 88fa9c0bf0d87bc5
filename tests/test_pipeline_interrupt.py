"""SIGINT in the middle of quantization keeps earlier artifacts, leaves no half-written files,
and the next run completes (skipping what already succeeded)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from toolchain.artifact import load_artifact
from toolchain.pipeline import PipelineConfig, run_pipeline


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp" in p.name or ".old-" in p.name]


def test_sigint_during_quantization_keeps_earlier_artifacts(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--model", "tiny-cnn", "--epochs", "1", "--formats", "onnx", "--quantize", "ptq,qat", "--qat-epochs", "2",
            "--batch-size", "1", "--bench-seconds", "0.05", "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "toolchain.cli", "pipeline", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env)
    seen = []
    assert proc.stderr is not None
    deadline = time.monotonic() + 600
    for line in proc.stderr:
        seen.append(line)
        if "stage quantize-qat" in line or time.monotonic() > deadline:
            break
    time.sleep(2.0)  # well inside QAT fine-tuning
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=300)
    stderr = "".join(seen) + rest
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not _leftovers(out), _leftovers(out)
    assert load_artifact(out / "onnx").manifest.status == "ok"
    assert load_artifact(out / "int8-ptq").manifest.precision == "int8"
    assert not (out / "int8-qat").exists()

    again = run_pipeline(PipelineConfig(model="tiny-cnn", epochs=1, formats=["onnx"], quantize=["ptq", "qat"],
                                        qat_epochs=2, batch_sizes=[1], bench_seconds=0.05, out=out))
    assert again.stages["train"]["status"] == "skipped"
    assert again.stages["quantize-ptq"]["status"] == "skipped"
    assert again.stages["quantize-qat"]["status"] == "ok"
    assert load_artifact(out / "int8-qat").manifest.precision == "int8"
    assert not _leftovers(out)
