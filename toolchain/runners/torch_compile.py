"""torch.compile runner: an eager module compiled (inductor by default) on the first inference."""

from __future__ import annotations

import logging

import numpy as np

from toolchain.errors import MissingDependencyError, UserInputError, first_line
from toolchain.runners.torch_eager import TorchRunner

log = logging.getLogger(__name__)

MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class TorchCompileRunner(TorchRunner):
    """Options: backend ('inductor'), mode (None), dynamic (None), channels_last (False).

    Compilation happens on the first `infer()` of each new shape: warm up before timing.
    """

    name = "torch-compile"
    devices = ("cpu", "cuda")
    compiles_on_first_call = True  # bench reports that first call as compile_s, never as latency

    def load_impl(self) -> None:
        import torch

        super().load_impl()
        backend = self.options.get("backend", "inductor")
        mode = self.options.get("mode")
        if mode not in MODES:
            raise UserInputError(f"torch.compile mode '{mode}' must be one of {', '.join(map(str, MODES[1:]))}.")
        if backend not in torch._dynamo.list_backends(exclude_tags=()):
            raise UserInputError(
                f"Unknown torch.compile backend '{backend}'; available: {', '.join(torch._dynamo.list_backends())}."
            )
        self.eager = self.module
        self.module = torch.compile(self.eager, backend=backend, mode=mode, dynamic=self.options.get("dynamic"))

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        try:
            return super().infer_impl(batch)
        except (UserInputError, MissingDependencyError):
            raise
        except Exception as exc:  # inductor needs a working C++ compiler; report it in one line
            if type(exc).__name__ in ("BackendCompilerFailed", "InductorError", "CppCompileError"):
                raise MissingDependencyError(
                    f"torch.compile failed to compile {self.model.name} ({first_line(exc)}); inductor needs a C++ "
                    "compiler on CPU. Use --backend torch instead."
                ) from None
            raise

    def close_impl(self) -> None:
        super().close_impl()
        self.module = self.eager
