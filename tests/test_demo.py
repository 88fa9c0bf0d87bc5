"""vtool demo: the side-by-side classifier (no gradio needed), its config and errors; the Gradio page itself
(where gradio is installed: its own venv, see README) through gradio_client and headless Chromium."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error, run_cli

from toolchain.demo import DemoConfig, SideBySide, build_app, summary_markdown
from toolchain.errors import MissingDependencyError, UserInputError
from toolchain.predict import predict
from toolchain.sources import load_model


@pytest.fixture(scope="module")
def digits_png(tmp_path_factory: pytest.TempPathFactory, tiny_cnn_model) -> list[tuple[Path, str]]:
    """Three test-split digits of different classes that the trained tiny-cnn gets right, as PNG files."""
    from toolchain.inputs import resolve_bundle

    bundle = resolve_bundle(tiny_cnn_model, None)
    folder = tmp_path_factory.mktemp("digits")
    chosen: list[tuple[Path, str]] = []
    for index in bundle.split["test"]:
        label = str(bundle.samples.labels[index])
        if any(label == seen for _, seen in chosen):
            continue
        path = folder / f"digit-{index}.png"
        bundle.samples.image(index).resize((64, 64)).save(path)
        if predict(tiny_cnn_model, [path])[0].label == label:
            chosen.append((path, label))
        if len(chosen) == 3:
            return chosen
    pytest.fail("the trained tiny-cnn got fewer than three test digits right")


def test_side_by_side_fp32_vs_onnx(tiny_cnn_model, exported_tiny_cnn, digits_png):
    path, label = digits_png[0]
    side = SideBySide([tiny_cnn_model, load_model(str(exported_tiny_cnn("onnx")))], DemoConfig(top_k=2))
    try:
        answers = side.classify(path)
    finally:
        side.close()
    assert [a["top1"] for a in answers] == [label, label]
    assert all(len(a["top"]) == 2 and a["latency_ms"] > 0 for a in answers)
    assert answers[0]["top"][0]["confidence"] == pytest.approx(answers[1]["top"][0]["confidence"], abs=1e-4)
    assert "(fp32, torch)" in answers[0]["model"] and "onnxruntime" in answers[1]["model"]
    assert f"top-1 **{label}**" in summary_markdown(answers) and "agrees" in summary_markdown(answers)


def test_demo_config_and_model_errors(tiny_cnn_model, tmp_path):
    with pytest.raises(UserInputError, match="--port"):
        DemoConfig(port=70000)
    with pytest.raises(UserInputError, match="--top-k"):
        DemoConfig(top_k=0)
    with pytest.raises(UserInputError, match="--example"):
        DemoConfig(example=tmp_path / "none.png")
    with pytest.raises(UserInputError, match="one or two models"):
        SideBySide([tiny_cnn_model] * 3)


def test_demo_without_gradio_is_a_one_line_error(trained_tiny_cnn, tiny_cnn_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)
    side = SideBySide([tiny_cnn_model])
    with pytest.raises(MissingDependencyError, match=r"vtool\[demo\]"):
        build_app(side)
    side.close()
    one_line_error(run_cli("demo", trained_tiny_cnn, "--port", "0"), "needs gradio")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gradio_page_upload_and_headless_chromium(trained_tiny_cnn, exported_tiny_cnn, digits_png, tmp_path):
    """Acceptance: a digit uploaded through the page's API gets the right top-1 from both models; headless
    Chromium renders the page with its example digit classified and takes a screenshot."""
    pytest.importorskip("gradio")
    client_module = pytest.importorskip("gradio_client")
    from toolchain.demo import launch

    (example, example_label), (upload, upload_label) = digits_png[:2]
    port = _free_port()
    app, side = launch([trained_tiny_cnn, str(exported_tiny_cnn("onnx"))], DemoConfig(port=port, example=example),
                       block=False)
    url = f"http://127.0.0.1:{port}/"
    try:
        client = client_module.Client(url, verbose=False)
        fp32, onnx, summary = client.predict(client_module.handle_file(str(upload)), api_name="/classify")
        assert fp32["label"] == onnx["label"] == upload_label
        assert f"top-1 **{upload_label}**" in summary and "agrees" in summary
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            pytest.skip("headless Chromium is not installed (apt-get install chromium)")
        flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,720",
                 "--virtual-time-budget=60000"]
        dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
        assert re.search(rf"top-1 {example_label} \(", text), text[-2000:]
        assert "agrees" in text
        shot = tmp_path / "demo.png"
        subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
        assert shot.stat().st_size > 10_000
        from PIL import Image

        assert np.asarray(Image.open(shot).convert("L")).std() > 5  # not a blank page
    finally:
        app.close()
        side.close()
