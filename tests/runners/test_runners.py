"""Runners: one interface, same logits as eager on real images, one-line errors for bad models and inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from toolchain.artifact import load_artifact
from toolchain.errors import ArtifactError, MissingDependencyError, UserInputError
from toolchain.inputs import evaluation_inputs
from toolchain.models import LoadedModel
from toolchain.runners import DEFAULT_RUNNER, RUNNERS, get_runner, installed_runners, run_model, runners_for
from toolchain.runners.onnxrt import providers_for
from toolchain.sources import load_model

# (runner, artifact format or "torch" for the eager module, options)
CASES = [
    ("torch", "torch", {}),
    ("torch", "torch", {"channels_last": True}),
    ("torch-compile", "torch", {"backend": "eager"}),
    ("torchscript", "torchscript", {}),
    ("pt2", "pt2", {}),
    ("onnxruntime", "onnx", {}),
    ("openvino", "onnx", {}),
]


@pytest.fixture(scope="module")
def real_images(tiny_cnn_model: LoadedModel) -> np.ndarray:
    return evaluation_inputs(tiny_cnn_model, limit=30).x


@pytest.fixture(scope="module")
def eager_logits(tiny_cnn_model: LoadedModel, real_images: np.ndarray) -> np.ndarray:
    with get_runner("torch", tiny_cnn_model) as runner:
        return runner.infer(real_images)


def model_for(fmt: str, tiny_cnn_model: LoadedModel, exported_tiny_cnn) -> LoadedModel:
    return tiny_cnn_model if fmt == "torch" else load_model(str(exported_tiny_cnn(fmt)))


@pytest.mark.parametrize("name, fmt, options", CASES, ids=[f"{c[0]}-{'-'.join(c[2]) or 'default'}" for c in CASES])
def test_runner_matches_eager(name, fmt, options, tiny_cnn_model, exported_tiny_cnn, real_images, eager_logits):
    if name not in installed_runners():
        pytest.skip(f"{name} is not installed")
    model = model_for(fmt, tiny_cnn_model, exported_tiny_cnn)
    with get_runner(name, model, **options) as runner:
        assert runner.loaded
        for batch in (1, 7):
            out = runner.infer(real_images[:batch])
            assert out.shape == (batch, 10) and out.dtype == np.float32
            np.testing.assert_allclose(out, eager_logits[:batch], atol=1e-4, rtol=0)
        runner.synchronize()
        assert runner.describe()["runner"] == name
    assert not runner.loaded


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript"])
def test_auto_picks_default_runner(fmt, exported_tiny_cnn) -> None:
    model = load_model(str(exported_tiny_cnn(fmt)))
    assert get_runner("auto", model).name == DEFAULT_RUNNER[fmt]
    assert DEFAULT_RUNNER[fmt] in runners_for(model)


def test_onnxruntime_uses_threads(exported_tiny_cnn) -> None:
    with get_runner("onnxruntime", load_model(str(exported_tiny_cnn("onnx"))), threads=2) as runner:
        assert runner.session.get_session_options().intra_op_num_threads == 2
        assert runner.describe()["providers"] == ["CPUExecutionProvider"]


@pytest.mark.parametrize("name, fmt", [(c[0], c[1]) for c in CASES if "channels_last" not in c[2]])
@pytest.mark.parametrize("shape", [(2, 3, 28, 28), (2, 1, 32, 32), (3, 32, 32)], ids=["size", "channels", "ndim"])
def test_wrong_input_shape_is_one_line(name, fmt, shape, tiny_cnn_model, exported_tiny_cnn) -> None:
    if name not in installed_runners():
        pytest.skip(f"{name} is not installed")
    runner = get_runner(name, model_for(fmt, tiny_cnn_model, exported_tiny_cnn))
    with pytest.raises(UserInputError, match=r"expected \(N, 3, 32, 32\)") as info:
        runner.infer(np.zeros(shape, np.float32))
    assert "\n" not in str(info.value)
    runner.close()


@pytest.mark.parametrize("fmt, name", [("onnx", "onnxruntime"), ("onnx", "openvino"), ("pt2", "pt2"),
                                       ("torchscript", "torchscript")])
def test_corrupt_model_file_is_artifact_error(fmt, name, tmp_path: Path, exported_tiny_cnn) -> None:
    if name not in installed_runners():
        pytest.skip(f"{name} is not installed")
    copy = shutil.copytree(exported_tiny_cnn(fmt), tmp_path / "copy")
    model_file = load_artifact(copy).model_path
    model_file.write_bytes(b"this is not a model" * 10)
    with pytest.raises(ArtifactError, match="corrupt") as info:
        get_runner(name, load_model(str(copy))).load()
    assert "\n" not in str(info.value) and str(model_file) in str(info.value)


def test_missing_model_file_and_unknown_schema(tmp_path: Path, exported_tiny_cnn) -> None:
    missing = shutil.copytree(exported_tiny_cnn("onnx"), tmp_path / "missing")
    (missing / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="model.onnx' but it is missing"):
        load_model(str(missing))
    future = shutil.copytree(exported_tiny_cnn("onnx"), tmp_path / "future")
    data = json.loads((future / "manifest.json").read_text())
    data["schema_version"] = 99
    (future / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="schema_version 99"):
        load_model(str(future))


def test_unknown_or_mismatched_backend(tiny_cnn_model, exported_tiny_cnn) -> None:
    with pytest.raises(UserInputError, match="Unknown backend 'onnxrt'.*Did you mean 'onnxruntime'"):
        get_runner("onnxrt", tiny_cnn_model)
    with pytest.raises(UserInputError, match="cannot run a torch model.*Backends for torch: torch, torch-compile"):
        get_runner("onnxruntime", tiny_cnn_model)
    with pytest.raises(UserInputError, match="cannot run a pt2 model"):
        get_runner("openvino", load_model(str(exported_tiny_cnn("pt2"))))
    with pytest.raises(UserInputError, match="does not run on cuda"):
        get_runner("openvino", load_model(str(exported_tiny_cnn("onnx"))), device="cuda")


def test_missing_backend_package_lists_installed(monkeypatch, tiny_cnn_model) -> None:
    monkeypatch.setitem(RUNNERS, "fancy", ("toolchain.runners.torch_eager", "TorchRunner", "no_such_pkg_xyz",
                                           ("torch",)))
    with pytest.raises(MissingDependencyError, match="needs the Python package 'no_such_pkg_xyz'.*Installed backends: "
                                                     "torch"):
        get_runner("fancy", tiny_cnn_model)


def test_missing_provider_lists_available() -> None:
    with pytest.raises(MissingDependencyError, match="no CUDAExecutionProvider.*available providers: "
                                                     "CPUExecutionProvider"):
        providers_for("cuda", ["CPUExecutionProvider"])
    assert providers_for("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"


def test_cuda_request_without_gpu(exported_tiny_cnn) -> None:
    import onnxruntime as ort
    import torch

    if torch.cuda.is_available() or "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA device is available here")
    with pytest.raises(MissingDependencyError, match="available providers"):
        get_runner("onnxruntime", load_model(str(exported_tiny_cnn("onnx"))), device="cuda").load()
    with pytest.raises(MissingDependencyError, match="no CUDA GPU"):
        get_runner("pt2", load_model(str(exported_tiny_cnn("pt2"))), device="cuda").load()


def test_static_batch_onnx_rejects_other_batch(tmp_path: Path, tiny_cnn_model, real_images) -> None:
    from toolchain.export import ExportConfig, export_model

    result = export_model(tiny_cnn_model, ExportConfig(format="onnx", out=tmp_path / "s", dynamic_batch=False,
                                                       verify_samples=4))
    with get_runner("onnxruntime", load_model(str(result.path))) as runner:
        assert runner.infer(real_images[:1]).shape == (1, 10)
        with pytest.raises(UserInputError, match="static batch of 1, got a batch of 2"):
            runner.infer(real_images[:2])


def test_runner_options_validated(tiny_cnn_model, exported_tiny_cnn) -> None:
    with pytest.raises(UserInputError, match="graph_optimization"):
        get_runner("onnxruntime", load_model(str(exported_tiny_cnn("onnx"))), graph_optimization="max").load()
    with pytest.raises(UserInputError, match="threads must be >= 1"):
        get_runner("torch", tiny_cnn_model, threads=0)


@pytest.mark.slow
def test_torch_compile_inductor_matches_eager(tiny_cnn_model, real_images, eager_logits) -> None:
    with get_runner("torch-compile", tiny_cnn_model, threads=2) as runner:
        np.testing.assert_allclose(runner.infer(real_images[:7]), eager_logits[:7], atol=1e-4, rtol=0)


# ------------------------------------------------------------------ loader/runner split, batching, named outputs


def test_runner_from_a_model_file_and_its_spec(tiny_cnn_model, exported_tiny_cnn, real_images, eager_logits) -> None:
    path = exported_tiny_cnn("onnx") / "model.onnx"
    with get_runner("auto", path, spec=tiny_cnn_model.spec, threads=1) as runner:
        assert runner.name == "onnxruntime" and runner.model.origin == f"file:{path}"
        np.testing.assert_allclose(runner.infer(real_images), eager_logits, atol=1e-4, rtol=0)
    with pytest.raises(UserInputError, match="needs its ModelSpec"):
        get_runner("onnxruntime", path)


def test_infer_batched_equals_one_big_batch(tiny_cnn_model, real_images, eager_logits) -> None:
    with get_runner("torch", tiny_cnn_model) as runner:
        for size in (1, 7, 64):
            np.testing.assert_allclose(runner.infer_batched(real_images, size), eager_logits, atol=1e-5, rtol=0)
        assert runner.infer_batched(real_images[:0]).shape == (0, 10)
        with pytest.raises(UserInputError, match="batch size must be >= 1"):
            runner.infer_batched(real_images, 0)
    logits = run_model(tiny_cnn_model, real_images, "torch", batch_size=4)
    np.testing.assert_allclose(logits, eager_logits, atol=1e-5, rtol=0)


def test_onnxruntime_run_outputs_all_named_and_intermediate(tiny_cnn_model, exported_tiny_cnn, real_images,
                                                            eager_logits) -> None:
    import onnx

    path = exported_tiny_cnn("onnx") / "model.onnx"
    relu = next(n.output[0] for n in onnx.load(str(path)).graph.node if n.op_type == "Relu")
    with get_runner("onnxruntime", path, spec=tiny_cnn_model.spec) as runner:
        outputs = runner.run_outputs(real_images[:3])
        assert list(outputs) == ["logits"] and outputs["logits"].shape == (3, 10)
        with pytest.raises(UserInputError, match="has no output"):
            runner.run_outputs(real_images[:3], [relu])
    with get_runner("onnxruntime", path, spec=tiny_cnn_model.spec, expose_outputs=[relu],
                    graph_optimization="disable") as runner:
        assert runner.output_names == ["logits", relu]
        named = runner.run_outputs(real_images[:3], [relu])
        assert list(named) == [relu] and named[relu].shape[0] == 3 and (named[relu] >= 0).all()  # after a ReLU
        np.testing.assert_allclose(runner.infer(real_images[:3]), eager_logits[:3], atol=1e-4, rtol=0)
        assert runner.session.get_session_options().log_severity_level == 3
    with pytest.raises(UserInputError, match="no tensor named"):
        get_runner("onnxruntime", path, spec=tiny_cnn_model.spec, expose_outputs=["nope"]).load()
    with pytest.raises(UserInputError, match="graph_optimization"):
        get_runner("onnxruntime", path, spec=tiny_cnn_model.spec, graph_optimization="max").load()


def test_channels_last_runner_gives_the_module_back_contiguous(tiny_cnn_model, real_images) -> None:
    """Module.to(memory_format=...) works in place: a channels_last bench must not leave the caller's weights
    channels_last (ExecuTorch's export then failed on 'Expected ... to be NCHW' later in the same process)."""
    import torch

    with get_runner("torch", tiny_cnn_model, channels_last=True) as runner:
        runner.infer(real_images[:2])
    weights = [p for p in tiny_cnn_model.module.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.contiguous_format) for p in weights)
