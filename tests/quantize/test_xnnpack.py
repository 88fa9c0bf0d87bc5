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


RELU6_NET = """
import torch
from torch import nn


class Relu6Net(nn.Module):
    \"\"\"conv-BN-ReLU6 with a wide pre-clamp range (weights x40), like EfficientNet-Lite's blocks.\"\"\"

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        with torch.no_grad():
            self.conv.weight.mul_(40)
        self.act = nn.ReLU6()  # a Hardtanh module, as in timm's EfficientNet-Lite (F.relu6 exports as aten.relu6)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.act(self.bn(self.conv(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
"""


@pytest.mark.parametrize("qat", [False, True])
def test_relu6_is_quantized_after_the_clamp(tmp_path: Path, monkeypatch, qat: bool) -> None:
    """XNNPACKQuantizer alone observes the conv output before ReLU6 (range +-100s): vtool moves it after."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    from toolchain.quantize import xnnpack

    user = tmp_path / "relu6.py"
    user.write_text(RELU6_NET)
    model = load_model(f"{user}:Relu6Net")
    settings = xnnpack.XnnpackSettings(is_qat=qat)
    prepare = prepare_qat_pt2e if qat else prepare_pt2e
    prepared = prepare(xnnpack._graph(model.module, model.spec), settings.quantizer())
    clamp = next(n for n in prepared.graph.nodes if "hardtanh" in str(n.target))
    observer = next(iter(clamp.users))  # the clamp's output goes through its own observer / fake-quant
    assert observer.op == "call_module" and "activation_post_process" in str(observer.target)
    assert clamp.args[0].op == "call_function"  # ...and the conv/BN output before it has none
    if qat:
        return
    x = np.random.default_rng(0).standard_normal((48, 3, 32, 32)).astype(np.float32)
    reference = model.module(torch.from_numpy(x)).detach().numpy()

    def sqnr(logits: np.ndarray) -> float:
        return float(10 * np.log10((reference**2).sum() / ((reference - logits) ** 2).sum()))

    fused = xnnpack.ptq(model.module, model.spec, [x[:32]], settings)(torch.from_numpy(x)).detach().numpy()
    monkeypatch.setattr(xnnpack, "fuse_clamp_annotations", lambda graph: 0)
    plain = xnnpack.ptq(model.module, model.spec, [x[:32]], settings)(torch.from_numpy(x)).detach().numpy()
    assert sqnr(fused) > 35 and sqnr(fused) > sqnr(plain) + 10, (sqnr(fused), sqnr(plain))
