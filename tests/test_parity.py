"""Parity: an export answers like its model; a damaged copy does not, and the flipped classes are named."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import damaged_checkpoint

from toolchain.errors import UserInputError
from toolchain.models import LoadedModel
from toolchain.parity import RESULT_KEYS, ParityConfig, ParityResult, check_parity
from toolchain.sources import load_model


@pytest.fixture(scope="module")
def damaged(trained_tiny_cnn: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(str(damaged_checkpoint(trained_tiny_cnn, tmp_path_factory.mktemp("damaged") / "best.pt")))


def test_export_passes_parity_and_is_recorded(tiny_cnn_model, exported_tiny_cnn) -> None:
    candidate = load_model(str(exported_tiny_cnn("onnx")))
    before = len(candidate.artifact.manifest.parity)
    result = check_parity(tiny_cnn_model, candidate, ParityConfig())
    assert isinstance(result, ParityResult) and result and result.passed
    data = result.to_dict()
    assert set(RESULT_KEYS) <= set(data)
    assert data["agreement"] == 1.0 and data["top1_delta"] == 0.0 and data["max_abs_diff"] < 1e-4
    assert data["n"] == 269 and data["data"]["source"] == "digits"  # the checkpoint's recorded val split
    assert data["thresholds"] == {"max_drop": 0.01, "min_agreement": 0.99, "max_abs_diff": None, "rule": "ci"}
    assert data["flips"] == 0 and data["agreement_ci"][1] == 1.0 and data["gate"]["notes"] == []
    assert data["candidate"]["runner"] == "onnxruntime" and data["reference"]["runner"] == "torch"
    manifest = json.loads((candidate.artifact.path / "manifest.json").read_text())
    assert len(manifest["parity"]) == before + 1 and manifest["parity"][-1]["passed"] is True
    assert result.check() == [] and result.failures == []


def test_damaged_copy_fails_and_names_flipped_classes(tiny_cnn_model, damaged) -> None:
    result = check_parity(tiny_cnn_model, damaged, ParityConfig(limit=120))
    assert not result and result.failures
    assert result["n"] == 120 and result["agreement"] < 0.99
    assert result.flipped_classes and sum(result["flips_per_class"].values()) > 0
    message = result.message()
    assert "flipped classes:" in message and result.flipped_classes[0] in message and "\n" not in message
    assert result.check() == result.failures and "parity failed" in message


def test_thresholds_are_gates(tiny_cnn_model, damaged) -> None:
    loose = check_parity(tiny_cnn_model, damaged, ParityConfig(limit=60, max_drop=0.999, min_agreement=0.001))
    assert loose.passed
    strict = check_parity(tiny_cnn_model, tiny_cnn_model, ParityConfig(limit=20, max_abs_diff=0.0))
    assert strict.passed and strict["max_abs_diff"] == 0.0 and strict["sqnr_db"] == math.inf


def test_pt2_and_torchscript_candidates_with_explicit_backends(tiny_cnn_model, exported_tiny_cnn) -> None:
    for fmt, backend in (("pt2", "pt2"), ("torchscript", "torchscript"), ("onnx", "openvino")):
        if backend == "openvino":
            pytest.importorskip("openvino")
        result = check_parity(tiny_cnn_model, load_model(str(exported_tiny_cnn(fmt))),
                              ParityConfig(limit=40, backend_cand=backend, record=False))
        assert result.passed and result.candidate["runner"] == backend


@pytest.mark.parametrize("kwargs, match", [
    ({"max_drop": -0.1}, "--max-drop"),
    ({"min_agreement": 1.5}, "--min-agreement"),
    ({"limit": 0}, "--limit"),
    ({"split": "valid"}, "Unknown split 'valid'"),
    ({"batch_size": 0}, "--batch-size"),
    ({"max_abs_diff": -1.0}, "--max-abs-diff"),
])
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        ParityConfig(**kwargs)


def test_incompatible_models_refused(tiny_cnn_model) -> None:
    other = load_model("tiny-cnn", num_classes=4)
    with pytest.raises(UserInputError, match="same label set"):
        check_parity(tiny_cnn_model, other, ParityConfig())
    bigger = load_model("tiny-cnn", input_size=(40, 40))
    with pytest.raises(UserInputError, match="feeds both the same images"):
        check_parity(tiny_cnn_model, bigger, ParityConfig())
