"""The foundation CLI end to end: help, models, train -> eval -> predict on one run, error contract."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import one_line_error, one_torch_thread, run_cli  # noqa: F401
from PIL import Image


def test_help_works_without_importing_torch() -> None:
    code = ("import sys; from toolchain.cli import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "assert 'train' in r.output and 'predict' in r.output; "
            "print(sorted(m for m in ('torch', 'torchvision', 'transformers', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_command_help_pages() -> None:
    for command in ("train", "eval", "predict"):
        result = run_cli(command, "--help")
        assert result.exit_code == 0 and "--model" in result.stdout


def test_models_lists_the_registry() -> None:
    result = run_cli("models")
    assert result.exit_code == 0
    for name in ("simple-cnn", "resnet-cnn", "vit-tiny", "efficientnet-lite0"):
        assert name in result.stdout


def test_train_eval_predict_on_one_run(tmp_path) -> None:
    out = tmp_path / "run"
    trained = run_cli("train", "--model", "tiny-cnn", "--data", "synthetic", "--epochs", 2, "--out", out,
                  "--optimizer", "sgd", "--lr", 0.05, "--label-smoothing", 0.1, "--json", tmp_path / "t.json")
    assert trained.exit_code == 0, trained.stderr
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["epochs_run"] == 2 and {"val_accuracy", "test_accuracy"} <= set(result["metrics"])
    assert "test_accuracy" in trained.stdout
    evaluated = run_cli("eval", "--model", out, "--json", tmp_path / "e.json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] == result["metrics"]["test_accuracy"]
    image = tmp_path / "shape.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    predicted = run_cli("predict", out, "--image", image, "--top-k", 2)
    assert predicted.exit_code == 0, predicted.stderr
    assert any(name in predicted.stdout for name in ("circle", "square", "triangle", "cross"))


def test_usage_errors_are_exit_code_2_and_conflicts_are_one_line(tmp_path) -> None:
    assert run_cli("train", "--epochs", "many").exit_code == 2
    both = run_cli("predict", "tiny-cnn", "--model", "tiny-resnet", "--image", tmp_path / "x.png")
    assert both.exit_code == 1
    bad_size = run_cli("eval", "--model", "tiny-cnn", "--input-size", "big", "--data", "digits")
    one_line_error(bad_size, "--input-size 'big'")
    bad_opt = run_cli("train", "--model", "tiny-cnn", "--optimizer", "adam", "--out", tmp_path / "r")
    one_line_error(bad_opt, "Did you mean 'adamw'")
