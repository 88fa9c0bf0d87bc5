"""The CUDA paths on a real GPU: runners, exported programs, bench memory, torch.compile, parity, AMP training.

Skipped without a CUDA GPU (CI); VTOOL_GPU_DEVICE=cpu runs the same code on the CPU as a dry run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from toolchain.data import DataConfig, load_data
from toolchain.errors import MissingDependencyError
from toolchain.models import LoadedModel, create_model
from toolchain.runners import get_runner

DEV = os.environ.get("VTOOL_GPU_DEVICE", "cuda")
CUDA = DEV == "cuda"
pytestmark = pytest.mark.skipif(CUDA and not torch.cuda.is_available(), reason="needs a CUDA GPU")
QUICK = dict(iterations=20, warmup={"min_iterations": 2, "min_s": 0.0, "max_s": 2.0})


@pytest.fixture(scope="module")
def tiny() -> tuple[LoadedModel, np.ndarray]:
    torch.manual_seed(0)
    module, spec = create_model("tiny-cnn", num_classes=10)
    bundle = load_data(spec, DataConfig(source="digits", seed=0))
    spec = spec.replace(class_names=bundle.class_names, num_classes=bundle.num_classes)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    module.train()
    for x, y in bundle.loader("train", batch_size=64, shuffle=True):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        opt.step()
    module.eval()
    x, _ = bundle.arrays("val", limit=64)
    return LoadedModel(spec, "registry:tiny-cnn", module=module), np.asarray(x, dtype=np.float32)


def test_cuda_is_there() -> None:
    if CUDA:
        assert torch.cuda.is_available(), "torch does not see the GPU"
        from toolchain import envinfo

        info = envinfo.gpu_info()
        assert info and info["name"], info
        print("gpu_info:", info)


def test_torch_runner_matches_cpu_and_gives_module_back(tiny) -> None:
    model, x = tiny
    with get_runner("torch", model, device="cpu") as r:
        ref = r.infer_batched(x, 16)
    with get_runner("torch", model, device=DEV) as r:
        got = r.infer_batched(x, 16)
    assert next(model.module.parameters()).device.type == "cpu"  # close() moved it back
    diff = float(np.abs(ref - got).max())
    print(f"torch {DEV} vs cpu max abs diff {diff:.3g}")
    assert diff < 1e-2 and (ref.argmax(1) == got.argmax(1)).mean() >= 0.98


def test_channels_last_runner(tiny) -> None:
    model, x = tiny
    with get_runner("torch", model, device=DEV, channels_last=True) as r:
        got = r.infer_batched(x, 16)
    with get_runner("torch", model, device="cpu") as r:
        ref = r.infer_batched(x, 16)
    assert float(np.abs(ref - got).max()) < 1e-2
    assert model.module.conv1.weight.is_contiguous() if hasattr(model.module, "conv1") else True


@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_exported_runs_on_device(tiny, tmp_path: Path, fmt: str) -> None:
    from toolchain.export import ExportConfig, export_model
    from toolchain.sources import load_model

    model, x = tiny
    art = export_model(model, ExportConfig(format=fmt, out=tmp_path / fmt)).path
    loaded = load_model(str(art))
    with get_runner("auto", loaded, device=DEV) as r:
        got = r.infer_batched(x, 16)
    with get_runner("torch", model, device="cpu") as r:
        ref = r.infer_batched(x, 16)
    diff = float(np.abs(ref - got).max())
    print(f"{fmt} on {DEV} vs eager cpu: max abs diff {diff:.3g}")
    assert diff < 1e-2


def test_onnxruntime_cpu_build_on_cuda_is_a_clear_error(tiny, tmp_path: Path) -> None:
    """The GPU machine has torch+CUDA but the CPU-only onnxruntime: ORT on cuda must say so in one line, and
    bench's default plan must skip it with a note instead of failing."""
    import onnxruntime as ort

    from toolchain.bench import plan_backends
    from toolchain.export import ExportConfig, export_model
    from toolchain.sources import load_model

    model, _ = tiny
    art = load_model(str(export_model(model, ExportConfig(format="onnx", out=tmp_path / "onnx")).path))
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    with pytest.raises(MissingDependencyError, match="available providers"):
        get_runner("onnxruntime", art, device="cuda").load()
    plan, notes = plan_backends([art], None, device="cuda")
    print("plan:", [(m.name, b) for m, b in plan], "notes:", notes)


def test_benchmark_on_device_reports_gpu_memory(tiny) -> None:
    from toolchain.bench import BenchConfig, benchmark

    model, _ = tiny
    result = benchmark([model], BenchConfig(device=DEV, backends=["torch"], batch_sizes=[1, 8], **QUICK))
    data = result.to_dict() if hasattr(result, "to_dict") else result
    for e in result.entries:
        print(e.batch_size, getattr(e, "cuda_peak_mb", None), getattr(e, "includes_h2d", None))
        if CUDA:
            assert e.cuda_peak_mb and e.cuda_peak_mb > 0
            assert e.includes_h2d
    assert data


def test_torch_compile_on_device(tiny) -> None:
    model, x = tiny
    with get_runner("torch-compile", model, device=DEV) as r:
        got = r.infer(x[:8])
    with get_runner("torch", model, device="cpu") as r:
        ref = r.infer(x[:8])
    diff = float(np.abs(ref - got).max())
    print(f"torch-compile on {DEV}: max abs diff {diff:.3g}")
    assert diff < 1e-2


def test_parity_on_device(tiny, tmp_path: Path) -> None:
    from toolchain.export import ExportConfig, export_model
    from toolchain.parity import ParityConfig, check_parity
    from toolchain.sources import load_model

    model, _ = tiny
    art = load_model(str(export_model(model, ExportConfig(format="pt2", out=tmp_path / "pt2")).path))
    result = check_parity(model, art, ParityConfig(data="digits", device=DEV, record=False))
    print("parity:", result.metrics["agreement"], result.metrics["max_abs_diff"])
    assert result.passed, result.failures


def test_train_on_device_with_amp(tmp_path: Path) -> None:
    from toolchain.train import TrainConfig, train

    res = train("tiny-cnn", DataConfig(source="synthetic", synthetic_classes=3, synthetic_per_class=20),
                TrainConfig(epochs=1, device=DEV), tmp_path / "run")
    print("train:", getattr(res, "best_path", None) or res)
    assert (tmp_path / "run" / "best.pt").exists()


def test_pt2_with_lifted_constants_runs_on_device(tmp_path: Path) -> None:
    """A plain tensor attribute becomes a lifted constant that Module.to() leaves behind (seen on a ViT .pt2)."""
    from toolchain.export import ExportConfig, export_model
    from toolchain.sources import load_model
    from toolchain.spec import ModelSpec

    class WithConstant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3 * 8 * 8, 4)
            self.offset = torch.linspace(-1.0, 1.0, 4)  # neither parameter nor buffer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1)) + self.offset

    torch.manual_seed(0)
    spec = ModelSpec(architecture="with-constant", num_classes=4, input_size=(8, 8))
    model = LoadedModel(spec, "test:with-constant", module=WithConstant().eval())
    art = export_model(model, ExportConfig(format="pt2", out=tmp_path / "pt2")).path
    x = np.random.default_rng(0).normal(0, 1, (5, 3, 8, 8)).astype(np.float32)
    with get_runner("auto", load_model(str(art)), device=DEV) as r:
        got = r.infer_batched(x, 5)
    with get_runner("torch", model, device="cpu") as r:
        ref = r.infer_batched(x, 5)
    assert float(np.abs(ref - got).max()) < 1e-3
