"""Transformer fusion: attention blocks become one com.microsoft.Attention, the fp32 function is kept, the fused
dynamic INT8 candidate is judged first on ViTs, and other runtimes refuse it in one line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import one_line_error, run_cli

from toolchain.errors import UserInputError
from toolchain.quantize import QuantConfig, fusion, quantize
from toolchain.runners import get_runner, runners_for
from toolchain.sources import load_model

LOOSE = {"min_agreement": 0.5, "max_drop": 0.5, "eval_samples": 48, "samples": 32}


@pytest.fixture(scope="module")
def vit_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-vit (2 attention blocks, random weights) exported with the dynamo exporter, as users get it."""
    out = tmp_path_factory.mktemp("vit") / "tiny-vit-onnx"
    result = run_cli("export", "--model", "tiny-vit", "--format", "onnx", "--out", out)
    assert result.exit_code == 0, result.stderr
    return out


def _ops(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_fusion_rewrites_every_attention_block_and_keeps_the_function(vit_onnx: Path, tmp_path: Path) -> None:
    spec = load_model(str(vit_onnx)).spec
    probe = np.random.default_rng(0).standard_normal((4, spec.channels, *spec.input_size)).astype(np.float32)
    report = fusion.fuse_transformer(vit_onnx / "model.onnx", tmp_path / "fused.onnx", probe, spec)
    ops = _ops(tmp_path / "fused.onnx")
    assert report.attention_blocks == 2 and report.attention_fused == 2, report.skipped
    assert ops["Attention"] == 2 and "Softmax" not in ops  # the unfused attention was pruned
    assert "SkipLayerNormalization" not in ops and ops["LayerNormalization"] >= 4  # ORT's slow CPU kernel is left out
    assert report.max_abs_diff is not None and report.max_abs_diff < fusion.FUSED_ATOL


def test_vit_ptq_picks_the_fused_dynamic_candidate_and_records_its_runtime(vit_onnx: Path, tmp_path: Path) -> None:
    result = quantize(load_model(str(vit_onnx)), "digits", QuantConfig(out=tmp_path / "int8", speed=False, **LOOSE))
    manifest = result.artifact.manifest
    assert result.attempts[0]["step"] == "fused-dynamic"
    assert manifest.quantization["fusion"]["attention_fused"] == 2
    assert manifest.quantization["runtimes"] == ["onnxruntime"]
    assert "QAttention" in _ops(result.artifact.model_path)
    model = load_model(str(tmp_path / "int8"))
    assert runners_for(model) == ["onnxruntime"]
    if importlib.util.find_spec("openvino") is not None:
        with pytest.raises(UserInputError, match="onnxruntime only"):
            get_runner("openvino", model)
        # the file itself, without its manifest: OpenVINO is refused, naming the contrib ops
        one_line_error(run_cli("export", "--model", tmp_path / "int8", "--format", "openvino",
                               "--out", tmp_path / "ir"), "contrib ops")
        assert not (tmp_path / "ir").exists()
        one_line_error(run_cli("bench", tmp_path / "int8", "--batch-size", "1", "--backend", "openvino"),
                       "restricts it to onnxruntime")


def test_fusion_off_and_a_failed_check_fall_back_to_static_qdq(vit_onnx: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    off = quantize(load_model(str(vit_onnx)), "digits",
                   QuantConfig(out=tmp_path / "off", speed=False, fuse_transformer="off", **LOOSE))
    assert "fusion" not in off.artifact.manifest.quantization
    assert not any(n.domain == "com.microsoft" for n in onnx.load(str(off.artifact.model_path)).graph.node)
    monkeypatch.setattr(fusion, "FUSED_ATOL", 0.0)  # any difference at all now fails the fp32 check
    checked = quantize(load_model(str(vit_onnx)), "digits", QuantConfig(out=tmp_path / "strict", speed=False, **LOOSE))
    assert checked.attempts[0]["step"] != "fused-dynamic"
    assert checked.artifact.manifest.quantization.get("runtimes") is None


def test_fusion_on_a_cnn_is_a_note_not_a_crash(exported_tiny_cnn, tmp_path: Path) -> None:
    result = run_cli("quantize", "--model", exported_tiny_cnn("onnx"), "--data", "digits", "--fuse-transformer", "on",
                     "--samples", "32", "--no-speed", "--out", tmp_path / "cnn-int8")
    assert result.exit_code == 0, result.stderr
    assert "no attention block fused" in result.stderr
    one_line_error(run_cli("quantize", "--model", exported_tiny_cnn("onnx"), "--fuse-transformer", "maybe",
                           "--out", tmp_path / "x"), "--fuse-transformer")
