"""Edge formats: ExecuTorch `.pte` (XNNPACK) and OpenVINO IR export, their runners, and their bad inputs.

Skipped as a whole when the edge runtimes are not installed (pip install 'vtool[edge]'); the
missing-package messages themselves are tested by hiding the packages.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import UNSUPPORTED, one_line_error, run_cli

from toolchain.artifact import load_artifact
from toolchain.errors import ArtifactError, ExportError, MissingDependencyError, UserInputError
from toolchain.export import ExportConfig, export_model
from toolchain.runners import get_runner, run_model
from toolchain.sources import load_model

pytest.importorskip("executorch", reason="the edge extra is not installed (pip install 'vtool[edge]')")
pytest.importorskip("openvino", reason="the edge extra is not installed (pip install 'vtool[edge]')")


@pytest.fixture(scope="module")
def edge_exports(tiny_cnn_model, tmp_path_factory):
    """The trained tiny-cnn as a dynamic .pte, a static (1, 4) .pte and a dynamic IR, exported once."""
    root = tmp_path_factory.mktemp("edge")
    configs = {"pte": ExportConfig(format="executorch", out=root / "pte", max_batch=16),
               "pte-static": ExportConfig(format="executorch", out=root / "pte-static", batch_sizes=(1, 4)),
               "ir": ExportConfig(format="openvino", out=root / "ir")}
    return {name: export_model(tiny_cnn_model, cfg) for name, cfg in configs.items()}


@pytest.fixture()
def digits_x(tiny_cnn_model) -> np.ndarray:
    from toolchain.inputs import evaluation_inputs

    return evaluation_inputs(tiny_cnn_model, "digits", part="val", limit=24).x


def _hide(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == package else real(name))


# ------------------------------------------------------------------ ExecuTorch


def test_pte_dynamic_export_verifies_and_records_delegation(edge_exports) -> None:
    result = edge_exports["pte"]
    manifest = result.artifact.manifest
    assert manifest.format == "executorch" and manifest.model_file == "model.pte" and result.passed
    export = manifest.export
    assert export["batch"] == {"dynamic": True, "min": 1, "max": 16, "methods": {"forward": "1..16"}}
    delegation = export["delegation"]
    assert delegation["delegate"] == "XNNPACK" and delegation["delegated_ops"] > 0
    assert delegation["delegated"]["aten.convolution.default"] == 3
    # the dynamic-batch flatten stays in the delegate (its symbolic size is rewritten to -1)
    assert delegation["delegated"]["aten.view_copy.default"] == 1
    assert export["portable_ops"] == [] and export["fully_delegated"] and delegation["subgraphs"] == 1
    verification = manifest.verification
    assert set(verification["batches"]) == {"1", "2", "7"} and verification["max_abs_diff"] <= 1e-4
    assert verification["runner"] == "executorch"


LAYER_NORM_NET = """
import torch
from torch import nn


class NormNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4)
        self.norm = nn.LayerNorm(4 * 8 * 8)
        self.head = nn.Linear(4 * 8 * 8, num_classes)

    def forward(self, x):
        return self.head(self.norm(torch.flatten(self.conv(x), 1)))
"""


def test_op_xnnpack_cannot_delegate_is_named_in_a_warning_and_the_manifest(tmp_path: Path, caplog) -> None:
    """XNNPACK 1.5.1 has no LayerNorm: it runs on a portable kernel, the rest stays delegated."""
    user = tmp_path / "norm.py"
    user.write_text(LAYER_NORM_NET)
    with caplog.at_level(logging.WARNING, logger="toolchain.export.pte"):
        result = export_model(load_model(f"{user}:NormNet"), ExportConfig(format="executorch", out=tmp_path / "p",
                                                                          data="digits", verify_samples=8))
    assert any("portable kernels: aten.native_layer_norm.default x1" in r.getMessage() for r in caplog.records)
    export = result.artifact.manifest.export
    assert export["portable_ops"] == ["aten.native_layer_norm.default"] and not export["fully_delegated"]
    assert export["delegation"]["delegated"]["aten.convolution.default"] == 1 and result.passed


def test_pte_runs_every_batch_up_to_its_bound_and_names_it_beyond(edge_exports, tiny_cnn_model, digits_x) -> None:
    x = np.resize(digits_x, (16, *digits_x.shape[1:]))
    eager = run_model(tiny_cnn_model, x, "torch")
    with get_runner("executorch", load_model(str(edge_exports["pte"].path)), threads=1) as runner:
        # the bound survives lowering (XNNPACK's conv guard would otherwise cap planned inputs at 15)
        np.testing.assert_allclose(runner.infer(x), eager, atol=1e-4)
        with pytest.raises(UserInputError, match=r"exported for batch sizes 1\.\.16, got a batch of 17.*--max-batch"):
            runner.infer(np.concatenate([x, x[:1]]))
        with pytest.raises(UserInputError, match=r"expected \(N, 3, 32, 32\)"):
            runner.infer(np.zeros((1, 3, 16, 16), np.float32))
        np.testing.assert_allclose(runner.infer_batched(np.concatenate([x, x]), 64), np.concatenate([eager, eager]),
                                   atol=1e-4)


def test_static_pte_holds_one_method_per_size(edge_exports, tiny_cnn_model, digits_x) -> None:
    artifact = edge_exports["pte-static"].artifact
    assert artifact.manifest.export["batch"]["methods"] == {"forward": 1, "forward_b4": 4}
    assert set(artifact.manifest.verification["batches"]) == {"1", "4"}
    assert artifact.manifest.export["fully_delegated"]
    with get_runner("auto", load_model(str(artifact.path))) as runner:
        assert runner.name == "executorch"
        with pytest.raises(UserInputError, match=r"batch sizes 1, 4, got a batch of 3.*--batch-sizes 1,3,4") as info:
            runner.infer(digits_x[:3])
        assert "\n" not in str(info.value)
        # a whole set goes through in chunks the program accepts (4, 4, ..., then 1s)
        x = digits_x[:11]
        np.testing.assert_allclose(runner.infer_batched(x, 32), run_model(tiny_cnn_model, x, "torch"), atol=1e-4)


def test_bare_pte_file_reads_its_batch_sizes(edge_exports, tiny_cnn_model, digits_x) -> None:
    path = edge_exports["pte"].artifact.model_path
    logits = run_model(path, digits_x[:5], "executorch", spec=tiny_cnn_model.spec)
    np.testing.assert_allclose(logits, run_model(tiny_cnn_model, digits_x[:5], "torch"), atol=1e-4)
    # a spec that disagrees with the program (a user's --input-size): refused against the program's own shape
    wrong = dataclasses.replace(tiny_cnn_model.spec, input_size=(16, 16))
    with pytest.raises(UserInputError, match=r"takes images of shape \(3, 32, 32\).*got \(3, 16, 16\)"):
        run_model(path, np.zeros((2, 3, 16, 16), np.float32), "executorch", spec=wrong)


def test_pte_config_validation() -> None:
    for kwargs, match in [({"format": "onnx", "batch_sizes": (1, 32)}, "--batch-sizes applies to --format executorch"),
                          ({"format": "executorch", "batch_sizes": (1, 1)}, "distinct numbers"),
                          ({"format": "executorch", "max_batch": 1}, "--max-batch must be >= 2"),
                          ({"format": "executorch", "batch_sizes": (1,), "max_batch": 8}, "bounds a dynamic batch"),
                          ({"format": "pt2", "max_batch": 8}, "--max-batch applies to --format executorch")]:
        with pytest.raises(UserInputError, match=match):
            ExportConfig(**kwargs)
    assert ExportConfig(format="executorch", batch_sizes=(1, 32)).verify_batch_sizes == (1, 32)
    assert ExportConfig(format="executorch", max_batch=4).verify_batch_sizes == (1, 2)


@pytest.mark.parametrize("fmt, op", [("executorch", "aten.linalg_eig"), ("openvino", "aten.linalg_eig")])
def test_op_without_kernel_or_conversion_is_named(tmp_path: Path, fmt: str, op: str) -> None:
    user = tmp_path / "weird.py"
    user.write_text(UNSUPPORTED)
    with pytest.raises(ExportError, match=f"operator '{op}' is not supported") as info:
        export_model(load_model(f"{user}:EigNet"), ExportConfig(format=fmt, out=tmp_path / "eig", data="digits",
                                                               verify_samples=4))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "eig").exists()


def test_op_with_no_kernel_in_the_runtime_is_named(tmp_path: Path, monkeypatch) -> None:
    """A non-delegated op this ExecuTorch build has no kernel for would only fail at load time: export refuses."""
    import toolchain.export.pte as pte

    monkeypatch.setattr(pte, "runtime_operator_names", lambda: {"aten::convolution.out"})
    user = tmp_path / "norm.py"
    user.write_text(LAYER_NORM_NET)
    with pytest.raises(ExportError, match="operator 'aten::native_layer_norm.out' is neither delegated to XNNPACK "
                                          "nor has a kernel") as info:
        export_model(load_model(f"{user}:NormNet"), ExportConfig(format="executorch", out=tmp_path / "p",
                                                                 data="digits", verify_samples=4))
    assert "\n" not in str(info.value) and not (tmp_path / "p").exists()


def test_truncated_pte_is_a_one_line_artifact_error(edge_exports, tmp_path: Path) -> None:
    """In an artifact dir the recorded sha256 catches the cut; a bare .pte reaches ExecuTorch, which refuses it."""
    dest = tmp_path / "cut"
    shutil.copytree(edge_exports["pte"].path, dest)
    data = (dest / "model.pte").read_bytes()
    (dest / "model.pte").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="does not match the sha256 recorded") as info:
        load_model(str(dest))
    assert "\n" not in str(info.value)
    bare = tmp_path / "bare.pte"
    bare.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="ExecuTorch cannot load .*truncated or not a .pte") as info:
        with get_runner("executorch", load_model(str(bare), num_classes=10)) as runner:
            runner.infer(np.zeros((1, 3, 32, 32), np.float32))
    assert "\n" not in str(info.value)


def test_missing_executorch_names_the_extra(monkeypatch, tiny_cnn_model, edge_exports, tmp_path: Path) -> None:
    _hide(monkeypatch, "executorch")
    with pytest.raises(MissingDependencyError, match=r"pip install 'vtool\[edge\]'"):
        export_model(tiny_cnn_model, ExportConfig(format="executorch", out=tmp_path / "x"))
    with pytest.raises(MissingDependencyError, match=r"Backend 'executorch' needs .*vtool\[edge\]"):
        get_runner("executorch", load_model(str(edge_exports["pte"].path)))
    assert not (tmp_path / "x").exists()


def test_cli_missing_executorch_is_one_line(monkeypatch, trained_tiny_cnn: Path, tmp_path: Path) -> None:
    _hide(monkeypatch, "executorch")
    result = run_cli("export", "--model", trained_tiny_cnn, "--format", "executorch", "--out", tmp_path / "x")
    one_line_error(result, "pip install 'vtool[edge]'")


def test_cli_pte_batch_error_is_one_line(edge_exports) -> None:
    result = run_cli("bench", edge_exports["pte-static"].path, "--batch-size", "2", "--iterations", "2")
    one_line_error(result, "exported for batch sizes 1, 4, got a batch of 2")


# ------------------------------------------------------------------ OpenVINO IR


def test_ir_export_is_fp32_xml_and_bin(edge_exports, tiny_cnn_model, digits_x) -> None:
    artifact = edge_exports["ir"].artifact
    assert artifact.manifest.format == "openvino" and edge_exports["ir"].passed
    assert {p.name for p in artifact.model_files} == {"model.xml", "model.bin"}
    assert artifact.size_mb * 1e6 >= (artifact.path / "model.bin").stat().st_size
    assert artifact.manifest.export["compress_to_fp16"] is False and artifact.manifest.export["batch"]["dynamic"]
    logits = run_model(load_model(str(artifact.path)), digits_x, "auto")
    np.testing.assert_allclose(logits, run_model(tiny_cnn_model, digits_x, "torch"), atol=1e-4)


def test_static_ir_refuses_other_batches(tiny_cnn_model, tmp_path: Path, digits_x) -> None:
    result = export_model(tiny_cnn_model, ExportConfig(format="openvino", out=tmp_path / "ir1", dynamic_batch=False))
    assert result.artifact.manifest.export["input_shape"] == "[1,3,32,32]"
    with get_runner("openvino", load_model(str(result.path))) as runner:
        with pytest.raises(UserInputError, match="static batch of 1, got a batch of 3"):
            runner.infer(digits_x[:3])


def test_truncated_ir_weights_are_a_one_line_artifact_error(edge_exports, tmp_path: Path) -> None:
    """The artifact's sha256 catches a cut .bin; a bare .xml with a cut .bin beside it reaches OpenVINO."""
    dest = tmp_path / "cut"
    shutil.copytree(edge_exports["ir"].path, dest)
    data = (dest / "model.bin").read_bytes()
    (dest / "model.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(ArtifactError, match="does not match the sha256 recorded") as info:
        load_model(str(dest))
    assert "\n" not in str(info.value)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(dest / "model.xml", bare / "model.xml")
    shutil.copy(dest / "model.bin", bare / "model.bin")
    with pytest.raises(ArtifactError, match="OpenVINO cannot load .*truncated") as info:
        get_runner("openvino", load_model(str(bare / "model.xml"), num_classes=10)).load()
    assert "\n" not in str(info.value)


def test_int8_ir_from_a_quantized_onnx_artifact(exported_tiny_cnn, tmp_path: Path, digits_x) -> None:
    from toolchain.quantize import QuantConfig, quantize

    int8 = quantize(load_model(str(exported_tiny_cnn("onnx"))), "digits",
                    QuantConfig(samples=64, out=tmp_path / "int8", speed=False))
    result = export_model(load_model(str(int8.path)), ExportConfig(format="openvino", out=tmp_path / "int8-ir"))
    manifest = result.artifact.manifest
    assert manifest.precision == "int8" and manifest.export["fake_quantize_ops"] > 0
    assert manifest.verification["reference"] == "int8 on openvino" and result.passed
    # the IR is the graph OpenVINO reads for that ONNX: identical logits, not merely within atol
    assert all(b["max_abs_diff"] == 0.0 for b in manifest.verification["batches"].values())
    saved = json.loads((result.path / "manifest.json").read_text())
    assert saved["quantization"]["engine"] == "onnxruntime"


def test_missing_openvino_names_the_extra(monkeypatch, tiny_cnn_model, tmp_path: Path) -> None:
    _hide(monkeypatch, "openvino")
    with pytest.raises(MissingDependencyError, match=r"--format openvino needs .*pip install 'vtool\[edge\]'"):
        export_model(tiny_cnn_model, ExportConfig(format="openvino", out=tmp_path / "x"))


def test_bench_measures_edge_runners(edge_exports) -> None:
    from toolchain.bench import BenchConfig, benchmark

    models = [load_model(str(edge_exports[name].path)) for name in ("pte", "ir")]
    result = benchmark(models, BenchConfig(batch_sizes=[1, 4], iterations=3, min_iterations=1))
    rows = {(e.runner, e.batch_size) for e in result.entries}
    assert rows == {("executorch", 1), ("executorch", 4), ("openvino", 1), ("openvino", 4)}
    assert load_artifact(edge_exports["ir"].path).size_mb > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "efficientnet-lite0", "vit-tiny"])
@pytest.mark.parametrize("fmt", ["executorch", "openvino"])
def test_full_size_models_verify_against_eager(tmp_path: Path, name: str, fmt: str) -> None:
    """Acceptance: the fp32 .pte / IR of the full-size registry models match eager at batch 1, 2 and 7."""
    result = export_model(load_model(name), ExportConfig(format=fmt, out=tmp_path / fmt, verify_samples=8))
    assert result.passed and result.verification["max_abs_diff"] <= 1e-4
    assert result.verification["agreement"] == 1.0
