"""Export: every format verifies against eager on real images; bad inputs are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import UNSUPPORTED

from toolchain.artifact import load_artifact
from toolchain.errors import ArtifactError, ExportError, ThresholdError, UserInputError
from toolchain.export import ExportConfig, ExportVerificationError, default_out_dir, export_model, operator_name
from toolchain.inputs import evaluation_inputs
from toolchain.models import list_models
from toolchain.sources import load_model

FORMATS = ("onnx", "pt2", "torchscript")

@pytest.fixture(scope="module")
def user_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user") / "weird_models.py"
    path.write_text(UNSUPPORTED)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_verifies_each_format(exported_tiny_cnn, tiny_cnn_model, fmt: str) -> None:
    artifact = load_artifact(exported_tiny_cnn(fmt))
    m = artifact.manifest
    assert m.status == "ok" and m.format == fmt
    assert m.source["sha256"] == tiny_cnn_model.source_hash
    assert m.source["data_config"]["source"] == "digits"  # copied from the checkpoint for later stages
    assert m.export["dynamic_batch"] is True and m.export["time_s"] > 0
    assert m.export["torchscript_deprecated"] is (fmt == "torchscript")
    v = m.verification
    assert v["passed"] and set(v["batches"]) == {"1", "2", "7"}
    assert v["data"]["source"] == "digits" and v["n"] == 64
    for stats in v["batches"].values():
        assert stats["max_abs_diff"] <= 1e-4 and stats["agreement"] == 1.0
    assert m.versions["torch"]


def test_onnx_is_one_checked_file_with_named_dynamic_io(exported_tiny_cnn) -> None:
    import onnx

    path = exported_tiny_cnn("onnx")
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "model.onnx"]  # no external .data file
    model = onnx.load(str(path / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {18}
    export = load_artifact(path).manifest.export
    assert export["exporter"] == "dynamo" and export["opset"] == 18 and export["checker"] == "passed"


def test_plain_onnxruntime_session_gives_eager_logits(exported_tiny_cnn, tiny_cnn_model) -> None:
    """No vtool code on the ONNX side: a user's own InferenceSession gets the same logits."""
    import onnxruntime as ort

    x = evaluation_inputs(tiny_cnn_model, limit=20).x
    session = ort.InferenceSession(str(exported_tiny_cnn("onnx") / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input": x})[0]
    with torch.no_grad():
        want = tiny_cnn_model.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert (got.argmax(1) == want.argmax(1)).all()


def test_openvino_runs_the_onnx_export(exported_tiny_cnn, tiny_cnn_model) -> None:
    ov = pytest.importorskip("openvino")
    x = evaluation_inputs(tiny_cnn_model, limit=7).x
    # OpenVINO's CPU default here is bf16 (logits move by ~1e-2); ask for f32 to compare with eager.
    compiled = ov.Core().compile_model(str(exported_tiny_cnn("onnx") / "model.onnx"), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled(x)[0]
    with torch.no_grad():
        want = tiny_cnn_model.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_tiny_vit_exports_every_format(tmp_path: Path, fmt: str) -> None:
    """transformers ViT (wrapped to return logits) through every exporter, verified on bundled photos."""
    loaded = load_model("tiny-vit")
    result = export_model(loaded, ExportConfig(format=fmt, out=tmp_path / fmt, verify_samples=16))
    assert result and result.verification["max_abs_diff"] <= 1e-4
    assert result.verification["data"]["source"].startswith("bundled-photos")


def test_tiny_resnet_onnx_simplified_records_it(tmp_path: Path) -> None:
    result = export_model(load_model("tiny-resnet"),
                          ExportConfig(format="onnx", out=tmp_path / "a", simplify=True, data="digits",
                                       verify_samples=16))
    export = result.artifact.manifest.export
    assert export["simplified"] is True and export["simplify"]["tool"].startswith("onnxscript")
    assert export["simplify"]["nodes_after"] <= export["simplify"]["nodes_before"]
    assert result.passed


def test_static_batch_and_frozen_torchscript(tmp_path: Path, tiny_cnn_model) -> None:
    onnx_result = export_model(tiny_cnn_model, ExportConfig(format="onnx", out=tmp_path / "s", dynamic_batch=False,
                                                            verify_samples=8))
    assert onnx_result.artifact.manifest.export["input_shape"][0] == 1
    assert set(onnx_result.verification["batches"]) == {"1"}
    ts = export_model(tiny_cnn_model, ExportConfig(format="torchscript", out=tmp_path / "f", freeze=True,
                                                   verify_samples=8))
    assert ts.artifact.manifest.export["frozen"] is True and ts.passed


def test_legacy_exporter_is_an_explicit_fallback(tmp_path: Path, tiny_cnn_model, caplog) -> None:
    with caplog.at_level("WARNING", logger="toolchain"):
        result = export_model(tiny_cnn_model, ExportConfig(format="onnx", exporter="legacy", opset=17,
                                                           out=tmp_path / "legacy", verify_samples=8))
    assert result.passed and result.artifact.manifest.export["exporter"] == "legacy"
    assert any("legacy" in r.message for r in caplog.records)


def test_default_out_dir_uses_run_name(tiny_cnn_model, trained_tiny_cnn: Path) -> None:
    assert default_out_dir(tiny_cnn_model, "onnx") == Path("exported") / f"{trained_tiny_cnn.parent.name}-onnx"
    assert default_out_dir(load_model("tiny-cnn"), "pt2") == Path("exported/tiny-cnn-pt2")


# ------------------------------------------------------------------ bad input


def test_unknown_format_suggests() -> None:
    with pytest.raises(UserInputError, match="Unknown export format 'onxx'.*Did you mean 'onnx'"):
        ExportConfig(format="onxx")


@pytest.mark.parametrize("opset, exporter", [(14, None), (30, None), (21, "legacy"), (12, "legacy")])
def test_opset_out_of_range(opset: int, exporter: str | None) -> None:
    with pytest.raises(UserInputError, match=f"--opset {opset} is out of range"):
        ExportConfig(format="onnx", opset=opset, exporter=exporter)


@pytest.mark.parametrize("kwargs, match", [
    ({"format": "pt2", "opset": 18}, "--opset applies to --format onnx only"),
    ({"format": "onnx", "exporter": "jit"}, "Unknown ONNX exporter 'jit'"),
    ({"format": "onnx", "freeze": True}, "--freeze applies to --format torchscript only"),
    ({"format": "torchscript", "simplify": True}, "--simplify applies to --format onnx only"),
    ({"format": "onnx", "atol": -1}, r"\(atol\) must be >= 0"),
    ({"format": "onnx", "min_agreement": 2}, r"--min-agreement must be in \(0, 1\]"),
])
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        ExportConfig(**kwargs)


def test_unexportable_op_is_named_and_leaves_nothing(tmp_path: Path, user_models: Path) -> None:
    loaded = load_model(f"{user_models}:EigNet")
    dest = tmp_path / "eig"
    with pytest.raises(ExportError, match="operator 'aten.linalg_eig' is not supported") as info:
        export_model(loaded, ExportConfig(format="onnx", out=dest, data="digits", verify_samples=4))
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no artifact, no staging leftovers


def test_failed_export_keeps_existing_good_artifact(tmp_path: Path, user_models: Path, exported_tiny_cnn) -> None:
    import shutil

    dest = tmp_path / "good"
    shutil.copytree(exported_tiny_cnn("onnx"), dest)
    before = (dest / "manifest.json").read_text()
    with pytest.raises(ExportError):
        export_model(load_model(f"{user_models}:EigNet"), ExportConfig(format="onnx", out=dest, data="digits",
                                                                        overwrite=True))
    assert (dest / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"]


def test_out_dir_that_is_not_an_artifact_is_never_replaced(tmp_path: Path, tiny_cnn_model) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="exists and is not an artifact directory"):
        export_model(tiny_cnn_model, ExportConfig(format="onnx", out=tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_operator_name_from_legacy_message() -> None:
    exc = RuntimeError("Exporting the operator 'aten::linalg_eig' to ONNX opset version 18 is not supported.")
    assert operator_name(exc) == "aten::linalg_eig"
    assert operator_name(RuntimeError("something else")) is None


@pytest.mark.parametrize("fmt, match", [("pt2", "Cannot export .* to pt2.*try --static-batch"),
                                        ("onnx", "does not support a dynamic batch.*--static-batch")])
def test_dynamic_batch_impossible_hints_static(tmp_path: Path, user_models: Path, fmt: str, match: str) -> None:
    with pytest.raises(ExportError, match=match):
        export_model(load_model(f"{user_models}:BatchQuirk"), ExportConfig(format=fmt, out=tmp_path / "q",
                                                                          data="digits", verify_samples=8))
    assert list(tmp_path.iterdir()) == []


def test_verification_failure_writes_failed_artifact_refused_later(tmp_path: Path, user_models: Path,
                                                                   exported_tiny_cnn) -> None:
    """A trace bakes the batch-2 branch: eager answers differently, so verification fails (exit code 3)."""
    import shutil

    from toolchain.runners import get_runner

    dest = tmp_path / "quirk"
    shutil.copytree(exported_tiny_cnn("torchscript"), dest)  # a good artifact already there
    with pytest.raises(ExportVerificationError, match=r"does not match its reference \(torch eager\)") as info:
        export_model(load_model(f"{user_models}:BatchQuirk"),
                     ExportConfig(format="torchscript", out=dest, data="digits", verify_samples=16, overwrite=True))
    assert isinstance(info.value, ThresholdError) and info.value.exit_code == 3
    failed = info.value.result.path
    assert failed == tmp_path / "quirk.failed"  # written beside, never over, the good artifact
    assert load_artifact(dest).manifest.status == "ok"
    manifest = json.loads((failed / "manifest.json").read_text())
    assert manifest["status"] == "failed" and not manifest["verification"]["passed"]
    assert manifest["verification"]["batches"]["1"]["agreement"] < 1.0
    with pytest.raises(ArtifactError, match="status 'failed'"):
        load_model(str(failed))
    raw = info.value.result.artifact
    from toolchain.models import LoadedModel

    with pytest.raises(ArtifactError, match="status 'failed'"):
        get_runner("auto", LoadedModel(raw.spec, "artifact", artifact=raw))


def test_export_refuses_non_torch_model(exported_tiny_cnn) -> None:
    with pytest.raises(UserInputError, match="already a onnx artifact"):
        export_model(load_model(str(exported_tiny_cnn("onnx"))), ExportConfig(format="pt2"))


@pytest.mark.slow
@pytest.mark.parametrize("name", [e.name for e in list_models() if not e.name.startswith("tiny-")])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_registry_model_exports(tmp_path: Path, name: str, fmt: str) -> None:
    """Every registry model, every format: verified at batch 1, 2 and 7 on real images (bundled photo crops)."""
    result = export_model(load_model(name), ExportConfig(format=fmt, out=tmp_path / fmt, verify_samples=16))
    assert result.passed and result.verification["max_abs_diff"] <= 1e-4


def test_export_that_its_runtime_cannot_load_is_an_export_error(tmp_path: Path, tiny_cnn_model, monkeypatch) -> None:
    from toolchain.runners.onnxrt import OnnxRuntimeRunner

    def refuse(self) -> None:
        raise ArtifactError("onnxruntime cannot load 'model.onnx' (NOT_IMPLEMENTED: Could not find an implementation)")

    monkeypatch.setattr(OnnxRuntimeRunner, "load_impl", refuse)
    with pytest.raises(ExportError, match="does not load for verification: onnxruntime cannot load"):
        export_model(tiny_cnn_model, ExportConfig(format="onnx", out=tmp_path / "x", verify_samples=4))
    assert list(tmp_path.iterdir()) == []
