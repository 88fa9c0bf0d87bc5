"""OpenVINO runner (optional extra: pip install 'vtool[edge]' or 'vtool[openvino]'): runs ONNX files and OpenVINO
IR (`model.xml` + `model.bin`) on the CPU."""

from __future__ import annotations

from typing import Any

import numpy as np

from toolchain.errors import ArtifactError, MissingDependencyError, UserInputError, first_line
from toolchain.runners.base import Runner

HINTS = ("LATENCY", "THROUGHPUT")
PRECISIONS = ("f32", "bf16", "f16")


class OpenVinoRunner(Runner):
    """Options: hint ('LATENCY' default or 'THROUGHPUT'), precision ('f32' default, 'bf16', 'f16').

    OpenVINO's own CPU default is bf16 where the CPU reports it (it does here, on AVX2 Zen3), which moves
    logits by up to ~3e-2; vtool asks for f32 so results match the model unless bf16 is requested.
    """

    name = "openvino"
    devices = ("cpu",)

    def load_impl(self) -> None:
        try:
            import openvino as ov
        except ImportError as exc:  # find_spec saw it, but it does not import (broken install)
            raise MissingDependencyError(f"openvino is installed but does not import ({exc}).") from None
        hint = str(self.options.get("hint", "LATENCY")).upper()
        if hint not in HINTS:
            raise UserInputError(f"OpenVINO hint '{hint}' must be one of {', '.join(HINTS)}.")
        core = ov.Core()
        if "CPU" not in core.available_devices:
            raise MissingDependencyError(f"OpenVINO sees no CPU device; available: {core.available_devices}.")
        precision = str(self.options.get("precision", "f32")).lower()
        if precision not in PRECISIONS:
            raise UserInputError(f"OpenVINO precision '{precision}' must be one of {', '.join(PRECISIONS)}.")
        config: dict[str, Any] = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        path = self.model.artifact.model_path
        refuse_contrib_ops(path)
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long texts
            raise ArtifactError(
                f"OpenVINO cannot load '{path}' ({first_line(exc)}); the file is corrupt, truncated or not ONNX/IR: "
                "re-export it."
            ) from None
        self.request = self.compiled.create_infer_request()
        first = self.compiled.input(0).get_partial_shape()[0]
        self.fixed_batch = first.get_length() if first.is_static else None

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        if self.fixed_batch is not None and batch.shape[0] != self.fixed_batch:
            raise UserInputError(
                f"{self.model.name} was exported with a static batch of {self.fixed_batch}, got a batch of "
                f"{batch.shape[0]}; re-export without --static-batch or use batch size {self.fixed_batch}."
            )
        self.request.infer({0: batch})
        return np.array(self.request.get_output_tensor(0).data, copy=True)

    def close_impl(self) -> None:
        self.request = None
        self.compiled = None


def refuse_contrib_ops(path: Any) -> None:
    """Refuse an ONNX graph with ONNX Runtime contrib ops (vtool's fused transformer INT8) up front, naming them.

    OpenVINO's ONNX frontend converts some of them (fp32 Attention, SkipLayerNormalization, BiasGelu) but not
    QAttention/MatMulInteger chains, and fails deep in its frontend when it cannot; vtool runs such graphs on
    onnxruntime only.
    """
    if not str(path).endswith(".onnx"):
        return
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = sorted({n.op_type for n in model.graph.node if n.domain == "com.microsoft"})
    if ops:
        raise UserInputError(
            f"'{path}' uses ONNX Runtime contrib ops ({', '.join(ops)}), which vtool runs on onnxruntime only: use "
            "--backend onnxruntime, or quantize with --fuse-transformer off for a graph OpenVINO can take."
        )
