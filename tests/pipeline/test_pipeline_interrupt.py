"""SIGINT in the middle of quantization keeps earlier artifacts, leaves no half-written files,
and the next run completes (skipping what already succeeded)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from toolchain.artifact import load_artifact
from toolchain.pipeline import PipelineConfig, run_pipeline

QAT_EPOCHS = 2  # the first Ctrl-C goes out when epoch 1 is logged: epoch 2, convert and export still run


def _without_swallowed_interrupts(stderr: str) -> str:
    """Python's own report of a Ctrl-C that landed in a weakref callback (not vtool's output)."""
    return re.sub(r"Exception ignored in.*?\nKeyboardInterrupt[^\n]*\n?", "", stderr, flags=re.S)


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp" in p.name or ".old-" in p.name]


def _interrupt_during(proc: subprocess.Popen, marker: str, lines: list[str]) -> None:
    """Press Ctrl-C as soon as `marker` shows in the output (whatever the machine's speed); press it again, as a
    user would, only while vtool has not answered 'interrupted', and then only when the interrupt was swallowed
    (a KeyboardInterrupt landing in a weakref callback is printed as 'Exception ignored ...' and the run goes
    on) or nothing happened for 10 s. A Ctrl-C during clean-up, or while the interpreter shuts down after
    vtool answered, would be a different test."""
    readers = [threading.Thread(target=lambda s=stream: lines.extend(s), daemon=True)
               for stream in (proc.stdout, proc.stderr)]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 600
    while not any(marker in line for line in lines):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    sent, swallowed = time.monotonic(), 0
    while proc.poll() is None:
        if any("error: interrupted" in line for line in lines):
            break
        now_swallowed = sum("Exception ignored" in line for line in lines)
        if now_swallowed > swallowed or time.monotonic() - sent > 10.0:
            swallowed = now_swallowed
            proc.send_signal(signal.SIGINT)
            sent = time.monotonic()
        time.sleep(0.1)
    proc.wait(timeout=300)
    for reader in readers:
        reader.join(timeout=30)


def test_sigint_during_quantization_keeps_earlier_artifacts(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--model", "tiny-cnn", "--epochs", "1", "--formats", "onnx", "--quantize", "ptq,qat", "--qat-epochs",
            str(QAT_EPOCHS), "--batch-size", "1", "--bench-seconds", "0.05", "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    # A CI job started in the background inherits SIGINT ignored, and Python then never raises KeyboardInterrupt:
    # the child gets the default disposition back, as a terminal would give it.
    proc = subprocess.Popen([sys.executable, "-m", "toolchain.cli", "pipeline", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    try:
        _interrupt_during(proc, f"QAT epoch 1/{QAT_EPOCHS}", lines)  # logged inside the quantize-qat stage
    finally:
        if proc.poll() is None:
            proc.kill()
    output = _without_swallowed_interrupts("".join(lines))  # stdout (logs) and stderr together
    assert "stage quantize-qat" in output and proc.returncode == 130, output[-2000:]
    assert "interrupted" in output and "Traceback" not in output
    assert not _leftovers(out), _leftovers(out)
    assert load_artifact(out / "onnx").manifest.status == "ok"
    assert load_artifact(out / "int8-ptq").manifest.precision == "int8"
    assert not (out / "int8-qat").exists()

    again = run_pipeline(PipelineConfig(model="tiny-cnn", epochs=1, formats=["onnx"], quantize=["ptq", "qat"],
                                        qat_epochs=QAT_EPOCHS, batch_sizes=[1], bench_seconds=0.05, out=out))
    assert again.stages["train"]["status"] == "skipped"
    assert again.stages["quantize-ptq"]["status"] == "skipped"
    assert again.stages["quantize-qat"]["status"] == "ok"
    assert load_artifact(out / "int8-qat").manifest.precision == "int8"
    assert not _leftovers(out)
