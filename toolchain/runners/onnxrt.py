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


def session_options(threads: int | None, graph_optimization: str = "all", inter_op_threads: int = 1,
                    log_level: int = 3) -> Any:
    """ORT SessionOptions: intra-op threads (None: ORT's own), graph optimisation level, log severity (3: errors)."""
    import onnxruntime as ort

    if graph_optimization not in GRAPH_LEVELS:
        raise UserInputError(f"graph_optimization '{graph_optimization}' must be one of {', '.join(GRAPH_LEVELS)}.")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = int(inter_op_threads)
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    opts.log_severity_level = int(log_level)
    return opts


def with_outputs(path: Any, names: list[str]) -> bytes:
    """The model at `path` with the named intermediate tensors added as graph outputs (serialized, in memory)."""
    import onnx

    model = onnx.load(str(path))
    existing = {o.name for o in model.graph.output}
    produced = {o for n in model.graph.node for o in n.output}
    unknown = [n for n in names if n not in produced and n not in existing]
    if unknown:
        raise UserInputError(f"{path} has no tensor named {', '.join(unknown[:5])}; expose_outputs names node outputs.")
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return model.SerializeToString()


def check_signature(path: Any, inputs: list[Any], outputs: list[Any], spec: Any) -> None:
    """An image classifier's graph: input (N, C, H, W) matching the spec, output (N, num_classes); checked at load
    so a table model or a wrong --num-classes / --input-size is one line, not an ONNX Runtime error mid-run."""
    expected = (spec.channels, *spec.input_size)
    if len(inputs) != 4:
        raise UserInputError(f"'{path}' takes an input of shape {list(inputs)}; vtool runs image classifiers whose "
                             f"input is a (N, C, H, W) batch, here (N, {', '.join(map(str, expected))}).")
    fixed = [(got, want) for got, want in zip(inputs[1:], expected, strict=True) if isinstance(got, int)]
    if any(got != want for got, want in fixed):
        height, width = (d if isinstance(d, int) else "?" for d in inputs[2:])
        raise UserInputError(f"'{path}' expects images of shape {list(inputs[1:])}, not {list(expected)}; pass "
                             f"--input-size {height}x{width} (a bare model file does not record its input size).")
    if len(outputs) != 2:
        raise UserInputError(f"'{path}' returns shape {list(outputs)}; vtool expects logits of shape (N, classes).")
    if isinstance(outputs[1], int) and outputs[1] != spec.num_classes:
        raise UserInputError(f"'{path}' outputs {outputs[1]} logits but is declared {spec.num_classes}-class; pass "
                             f"--num-classes {outputs[1]} (or use the model with its own class count).")


class OnnxRuntimeRunner(Runner):
    """Options: graph_optimization ('all' default), inter_op_threads (1), log_level (3: errors only),
    expose_outputs (intermediate tensor names added as graph outputs, for `run_outputs`)."""

    name = "onnxruntime"
    devices = ("cpu", "cuda")

    def load_impl(self) -> None:
        import onnxruntime as ort

        opts = session_options(self.threads, self.options.get("graph_optimization", "all"),
                               self.options.get("inter_op_threads", 1), self.options.get("log_level", 3))
        providers = providers_for(self.device, ort.get_available_providers())
        path = self.model.artifact.model_path
        expose = list(self.options.get("expose_outputs") or [])
        source = with_outputs(path, expose) if expose else str(path)
        try:
            self.session = ort.InferenceSession(source, sess_options=opts, providers=providers)
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
        check_signature(path, inp.shape, self.session.get_outputs()[0].shape, self.spec)
        self.input_name = inp.name
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.outputs = [o.name for o in self.session.get_outputs()]
        # infer() computes only the logits when intermediates are exposed (None: every output, the plain graph's one)
        self.logits_only = self.outputs[:1] if expose else None

    @property
    def output_names(self) -> list[str]:
        """Graph outputs in order (the first is the logits; exposed intermediates follow)."""
        self.load()
        return list(self.outputs)

    def _check_batch(self, batch: np.ndarray) -> None:
        if self.fixed_batch is not None and batch.shape[0] != self.fixed_batch:
            raise UserInputError(
                f"{self.model.name} was exported with a static batch of {self.fixed_batch}, got a batch of "
                f"{batch.shape[0]}; re-export without --static-batch or use batch size {self.fixed_batch}."
            )

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        self._check_batch(batch)
        try:
            return self.session.run(self.logits_only, {self.input_name: batch})[0]
        except Exception as exc:  # onnxruntime's InvalidArgument/Fail/RuntimeException: one line naming the file
            raise UserInputError(f"onnxruntime cannot run '{self.model.artifact.model_path}' on a batch of shape "
                                 f"{tuple(batch.shape)} ({first_line(exc, 200)}).") from None

    def run_outputs(self, batch: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Every graph output (or the named ones) for one batch, as float arrays keyed by tensor name."""
        self.check_input(batch)
        self.load()
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self._check_batch(batch)
        wanted = list(names) if names is not None else self.output_names
        missing = [n for n in wanted if n not in self.output_names]
        if missing:
            raise UserInputError(f"{self.model.name} has no output {', '.join(missing[:5])}; outputs: "
                                 f"{', '.join(self.output_names[:8])} (add intermediates with expose_outputs).")
        return dict(zip(wanted, self.session.run(wanted, {self.input_name: batch}), strict=True))

    def close_impl(self) -> None:
        self.session = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.loaded:
            info["providers"] = self.session.get_providers()
        return info
