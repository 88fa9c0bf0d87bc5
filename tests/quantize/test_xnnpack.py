"""quantize --engine xnnpack: PT2E + XNNPACKQuantizer lowered to an INT8 .pte, judged on ExecuTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error, run_cli

from toolchain.errors import UserInputError
from toolchain.quantize import QuantConfig, quantize
from toolchain.runners import get_runner
from toolchain.sources import load_model

pytest.importorskip("executorch", reason="the edge extra is not installed (pip install 'vtool[edge]')")


@pytest.fixture(scope="module")
def xnnpack_int8(tiny_cnn_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("xnn") / "tiny-int8-pte"
    return quantize(tiny_cnn_model, "digits", QuantConfig(engine="xnnpack", samples=128, out=out, speed=False))


def test_ptq_writes_an_int8_pte_within_budget(xnnpack_int8, tiny_cnn_model) -> None:
    result = xnnpack_int8
    manifest = result.artifact.manifest
    assert result.passed and manifest.format == "executorch" and manifest.precision == "int8"
    summary = result.summary
    assert summary["engine"] == "xnnpack" and summary["parity"]["top1_delta"] >= -0.01
    settings = summary["settings"]
    assert settings["weights"].startswith("int8 per-channel symmetric") and not settings["reduce_range"]
    assert summary["resolved"]["reduce_range"] is False  # XNNPACK needs no 7-bit weights, whatever the CPU
    assert summary["pte"]["delegation"]["delegated"]["quantized_decomposed.quantize_per_tensor.default"] >= 1
    assert summary["calibration_set"]["images"] == 128 and len(summary["calibration_set"]["sha256"]) == 64
    assert summary["size"]["quantized_bytes"] < summary["size"]["fp32_bytes"] / 2


def test_int8_pte_runs_on_executorch_at_any_batch(xnnpack_int8, tiny_cnn_model) -> None:
    from toolchain.inputs import evaluation_inputs

    x = evaluation_inputs(tiny_cnn_model, "digits", part="val", limit=40).x
    with get_runner("auto", load_model(str(xnnpack_int8.path))) as runner:
        assert runner.name == "executorch" and runner.batch_sizes == "1..64"
        batched = runner.infer_batched(x, 7)
        assert batched.shape == (40, 10)
        np.testing.assert_allclose(runner.infer(x[:1]), batched[:1], atol=1e-5)


def test_qat_path(tiny_cnn_model, tmp_path: Path) -> None:
    result = quantize(tiny_cnn_model, "digits", QuantConfig(engine="xnnpack", mode="qat", epochs=1, max_drop=0.05,
                                                          out=tmp_path / "qat", speed=False))
    assert result.passed and result.artifact.manifest.format == "executorch"
    assert result.summary["settings"]["is_qat"] and len(result.summary["qat"]["history"]) == 1


def test_default_out_does_not_collide_with_the_onnx_int8(tiny_cnn_model) -> None:
    from toolchain.quantize.core import default_out

    assert default_out(tiny_cnn_model, QuantConfig(engine="xnnpack")).name.endswith("-int8-pte")


def test_percentile_calibration_is_refused_in_one_line(tiny_cnn_model, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="--calibration percentile is not available with --engine xnnpack"):
        quantize(tiny_cnn_model, "digits", QuantConfig(engine="xnnpack", calibration="percentile",
                                                       out=tmp_path / "p", speed=False))
    assert not (tmp_path / "p").exists()


def test_cli_refuses_an_onnx_source(exported_tiny_cnn) -> None:
    result = run_cli("quantize", "--model", exported_tiny_cnn("onnx"), "--engine", "xnnpack", "--data", "digits")
    one_line_error(result, "--engine xnnpack quantizes a PyTorch graph")
