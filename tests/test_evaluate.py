"""Evaluation: sklearn metrics, the recorded split, plots and metrics.json (library and CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import one_line_error, one_torch_thread, run_cli  # noqa: F401

from toolchain.data import DataConfig, load_data
from toolchain.errors import UserInputError
from toolchain.evaluate import EvalConfig, eval_bundle, evaluate, score
from toolchain.sources import load_model


def test_score_matches_hand_computed_metrics() -> None:
    logits = np.array([[3, 1, 0], [0, 2, 1], [0, 3, 1], [1, 0, 2], [2, 0, 1]], dtype=np.float32)
    labels = np.array([0, 1, 2, 2, 1])
    result = score(logits, labels, ["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(0.6)
    assert result["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    assert result["per_class"]["a"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert result["per_class"]["c"]["precision"] == 1.0 and result["per_class"]["c"]["recall"] == 0.5
    assert result["top5"] == 1.0  # 3 classes: top-5 is every class


def test_evaluate_uses_the_recorded_split_and_writes_outputs(tiny_cnn_model, tmp_path) -> None:
    bundle = eval_bundle(tiny_cnn_model)
    assert bundle.split == tiny_cnn_model.info["split"]
    result = evaluate(tiny_cnn_model, bundle, EvalConfig(split="test"), tmp_path / "eval")
    assert result.n == len(bundle.split["test"]) and 0.5 < result.accuracy <= result.top5 <= 1.0
    cm = np.array(result.confusion_matrix)
    assert cm.shape == (10, 10) and cm.sum() == result.n
    assert np.trace(cm) == round(result.accuracy * result.n)
    assert sum(row["support"] for row in result.per_class.values()) == result.n
    assert len(result.misclassified) == min(24, result.n - np.trace(cm))
    for name in ("metrics.json", "confusion_matrix.png", "misclassified.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(saved) >= {"accuracy", "top5", "per_class", "confusion_matrix"}
    assert set(saved["per_class"]["3"]) == {"precision", "recall", "f1", "support"}


def test_evaluate_rejects_data_with_other_classes(tiny_cnn_model) -> None:
    with pytest.raises(UserInputError, match="predicts 10 classes"):
        eval_bundle(tiny_cnn_model, "synthetic")
    synthetic = load_data(tiny_cnn_model.spec, DataConfig(source="synthetic"))
    with pytest.raises(UserInputError, match="predicts 10 classes"):
        evaluate(tiny_cnn_model, synthetic)


def test_model_without_recorded_data_needs_data() -> None:
    with pytest.raises(UserInputError, match="pass --data"):
        eval_bundle(load_model("tiny-cnn"))


def test_eval_config_validation() -> None:
    with pytest.raises(UserInputError, match="Unknown split 'dev'"):
        EvalConfig(split="dev")


def test_eval_cli(trained_tiny_cnn, tmp_path) -> None:
    result = run_cli("eval", "--model", trained_tiny_cnn, "--split", "val", "--out", tmp_path / "ev",
                 "--json", tmp_path / "m.json")
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["part"] == "val" and data["n"] > 0 and len(data["confusion_matrix"]) == 10
    assert (tmp_path / "ev" / "confusion_matrix.png").exists()
    bad = run_cli("eval", "--model", trained_tiny_cnn, "--split", "dev")
    one_line_error(bad, "Unknown split")
    no_data = run_cli("eval", "--model", "tiny-cnn")
    one_line_error(no_data, "pass --data")


def test_eval_of_a_run_dir_writes_beside_it(tmp_path) -> None:
    out = tmp_path / "run"
    assert run_cli("train", "--model", "tiny-cnn", "--data", "synthetic", "--epochs", 1, "--out", out).exit_code == 0
    result = run_cli("eval", str(out))
    assert result.exit_code == 0, result.stderr
    assert (out / "eval-test" / "metrics.json").exists()


def test_exported_artifact_evaluates_on_the_recorded_split(tiny_cnn_model, exported_tiny_cnn) -> None:
    """An ONNX artifact made from the checkpoint is scored through its own runner on the same split."""
    artifact = load_model(str(exported_tiny_cnn("onnx")))
    reference = evaluate(tiny_cnn_model, eval_bundle(tiny_cnn_model))
    result = evaluate(artifact, eval_bundle(artifact))
    assert result.runner != "torch" and result.n == reference.n
    assert abs(result.accuracy - reference.accuracy) <= 1 / result.n
    assert result.class_names == reference.class_names
