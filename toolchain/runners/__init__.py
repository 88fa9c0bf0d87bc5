"""Backends as Runners, the only way vtool runs a model (Polygraphy's loader/runner split):

    with get_runner("onnxruntime", model, device="cpu") as r:          # a LoadedModel (checkpoint, artifact...)
        logits = r.infer_batched(x)
    with get_runner("auto", "work/int8.onnx", spec=spec, threads=2) as r:   # or a model file plus its ModelSpec
        ...
    logits = run_model(model, x)                                        # load, infer in batches, close

Runner modules are imported lazily, so asking for one never imports the others' libraries.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.artifact import require_usable
from toolchain.errors import MissingDependencyError, UserInputError, did_you_mean
from toolchain.models.loaded import LoadedModel
from toolchain.runners.base import DEVICES, Runner
from toolchain.spec import ModelSpec

# name -> (module, class, python package it needs, formats it runs)
RUNNERS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "torch": ("toolchain.runners.torch_eager", "TorchRunner", "torch", ("torch",)),
    "torch-compile": ("toolchain.runners.torch_compile", "TorchCompileRunner", "torch", ("torch",)),
    "torchscript": ("toolchain.runners.torchscript", "TorchScriptRunner", "torch", ("torchscript",)),
    "pt2": ("toolchain.runners.pt2", "Pt2Runner", "torch", ("pt2",)),
    "onnxruntime": ("toolchain.runners.onnxrt", "OnnxRuntimeRunner", "onnxruntime", ("onnx",)),
    "openvino": ("toolchain.runners.openvino_rt", "OpenVinoRunner", "openvino", ("onnx", "openvino")),
    "executorch": ("toolchain.runners.executorch_rt", "ExecuTorchRunner", "executorch", ("executorch",)),
}

# Optional runtimes and the install line that brings them in.
EXTRAS = {"executorch": "pip install 'vtool[edge]'", "openvino": "pip install 'vtool[edge]' or 'vtool[openvino]'"}

DEFAULT_RUNNER = {"torch": "torch", "onnx": "onnxruntime", "pt2": "pt2", "torchscript": "torchscript",
                  "openvino": "openvino", "executorch": "executorch"}


def installed_runners() -> list[str]:
    return [name for name, (_, _, pkg, _) in RUNNERS.items() if importlib.util.find_spec(pkg) is not None]


def model_format(model: LoadedModel) -> str:
    return model.artifact.format if model.artifact is not None else "torch"


def only_runtimes(model: LoadedModel) -> list[str] | None:
    """The runtimes an artifact is restricted to, as its manifest records (a fused transformer graph uses ONNX
    Runtime contrib ops, so only onnxruntime runs it); None when any runner of its format will do."""
    quant = model.artifact.manifest.quantization if model.artifact is not None else None
    runtimes = (quant or {}).get("runtimes")
    return [str(r) for r in runtimes] if isinstance(runtimes, list) and runtimes else None


def runners_for(model: LoadedModel) -> list[str]:
    """Installed runners that can execute this model's format (and that its manifest allows)."""
    fmt = model_format(model)
    allowed = only_runtimes(model)
    return [name for name in installed_runners() if fmt in RUNNERS[name][3] and (allowed is None or name in allowed)]


def default_runner(model: LoadedModel) -> str:
    fmt = model_format(model)
    if fmt not in DEFAULT_RUNNER:
        raise UserInputError(f"No runner can execute format '{fmt}'.")
    return DEFAULT_RUNNER[fmt]


def get_runner(name: str, model: LoadedModel | str | Path, device: str = "cpu", threads: int | None = None, *,
               spec: ModelSpec | None = None, **options: Any) -> Runner:
    """Build (not yet load) a Runner for a LoadedModel, or for a model file given with its `spec`.

    Unknown, missing or mismatched backends are one-line errors; "auto" picks the format's default runner.
    """
    if not isinstance(model, LoadedModel):
        if spec is None:
            raise UserInputError(f"A runner for the file '{model}' needs its ModelSpec (input size, classes): "
                                 "pass spec=..., or load the model with toolchain.load_model first.")
        model = LoadedModel.from_file(model, spec)
    if name == "auto":
        name = default_runner(model)
    if name not in RUNNERS:
        raise UserInputError(
            f"Unknown backend '{name}': expected one of {', '.join(RUNNERS)}.{did_you_mean(name, list(RUNNERS))}"
        )
    module_name, cls_name, package, formats = RUNNERS[name]
    if importlib.util.find_spec(package) is None:
        extra = f" ({EXTRAS[package]})" if package in EXTRAS else ""
        raise MissingDependencyError(
            f"Backend '{name}' needs the Python package '{package}', which is not installed{extra}. "
            f"Installed backends: {', '.join(installed_runners())}."
        )
    if model.artifact is not None:
        require_usable(model.artifact)
    fmt = model_format(model)
    if fmt not in formats:
        raise UserInputError(
            f"Backend '{name}' cannot run a {fmt} model ({model.name}); it runs {', '.join(formats)}. "
            f"Backends for {fmt}: {', '.join(runners_for(model)) or 'none installed'}."
        )
    allowed = only_runtimes(model)
    if allowed is not None and name not in allowed:
        raise UserInputError(
            f"{model.name} runs on {', '.join(allowed)} only (its graph uses that runtime's own fused ops, as the "
            f"manifest records); backend '{name}' cannot run it. Use --backend {allowed[0]}."
        )
    if device not in DEVICES:
        raise UserInputError(f"Unknown device '{device}': expected one of {', '.join(DEVICES)}.")
    if threads is not None and threads < 1:
        raise UserInputError(f"--threads must be >= 1, got {threads}.")
    cls = getattr(importlib.import_module(module_name), cls_name)
    if device not in cls.devices:
        raise UserInputError(f"Backend '{name}' does not run on {device}; it supports {', '.join(cls.devices)}.")
    return cls(model, device=device, threads=threads, **options)


def run_model(model: LoadedModel | str | Path, x: np.ndarray, runner: str = "auto", *, spec: ModelSpec | None = None,
              device: str = "cpu", threads: int | None = None, batch_size: int = 64, **options: Any) -> np.ndarray:
    """Load a runner, return the logits for all of `x` (Runner.infer_batched), close it."""
    with get_runner(runner, model, device=device, threads=threads, spec=spec, **options) as r:
        return r.infer_batched(x, batch_size)


__all__ = ["DEFAULT_RUNNER", "RUNNERS", "Runner", "default_runner", "get_runner", "installed_runners", "model_format",
           "only_runtimes", "run_model", "runners_for"]
