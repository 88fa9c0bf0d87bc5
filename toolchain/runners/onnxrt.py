"""ONNX Runtime runner (after Polygraphy's backend/onnxrt): CPU provider, CUDA only where it really loads."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from toolchain.errors import ArtifactError, MissingDependencyError, UserInputError, first_line
from toolchain.runners.base import Runner

log = logging.getLogger(__name__)

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
GRAPH_LEVELS = ("disable", "basic", "extended", "all")


def providers_for(device: str, available: list[str]) -> list[str]:
    """The provider list for `device`, or a one-line error naming what this onnxruntime has."""
    wanted = PROVIDERS[device]
    if wanted not in available:
        hint = " Install onnxruntime-gpu (instead of onnxruntime) on a machine with CUDA." if device == "cuda" else ""
        raise MissingDependencyError(
            f"onnxruntime has no {wanted} here; available providers: {', '.join(available)}.{hint}"
        )
    return [wanted, "CPUExecutionProvider"] if device == "cuda" else [wanted]


class OnnxRuntimeRunner(Runner):
    """Options: graph_optimization ('all' default), inter_op_threads (1)."""

    name = "onnxruntime"
    formats = ("onnx",)
    devices = ("cpu", "cuda")

    def load_impl(self) -> None:
        import onnxruntime as ort

        level = self.options.get("graph_optimization", "all")
        if level not in GRAPH_LEVELS:
            raise UserInputError(f"graph_optimization '{level}' must be one of {', '.join(GRAPH_LEVELS)}.")
        providers = providers_for(self.device, ort.get_available_providers())
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = int(self.options.get("inter_op_threads", 1))
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        opts.log_severity_level = 3
        path = self.model.artifact.model_path
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/NoSuchFile types
            raise ArtifactError(
                f"onnxruntime cannot load '{path}' ({first_line(exc)}); the file is corrupt or not ONNX: re-export it."
            ) from None
        if self.device == "cuda" and "CUDAExecutionProvider" not in self.session.get_providers():
            raise MissingDependencyError(
                f"onnxruntime could not start the CUDA provider here (session uses {self.session.get_providers()}); "
                "check the CUDA/cuDNN install or use --device cpu."
            )
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        if self.fixed_batch is not None and batch.shape[0] != self.fixed_batch:
            raise UserInputError(
                f"{self.model.name} was exported with a static batch of {self.fixed_batch}, got a batch of "
                f"{batch.shape[0]}; re-export without --static-batch or use batch size {self.fixed_batch}."
            )
        return self.session.run(None, {self.input_name: batch})[0]

    def close_impl(self) -> None:
        self.session = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.loaded:
            info["providers"] = self.session.get_providers()
        return info
