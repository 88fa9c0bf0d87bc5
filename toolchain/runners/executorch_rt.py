"""ExecuTorch runner (optional extra: pip install 'vtool[edge]'): runs `.pte` programs through executorch.runtime.

A `.pte` accepts the batch sizes it was exported for: any batch from 1 to its bound (dynamic), or
exactly the sizes it holds a method for (static). `infer()` refuses any other batch with one line
naming the exported sizes; `infer_batched()` feeds a whole image set in chunks the program accepts.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from toolchain.errors import ArtifactError, MissingDependencyError, UserInputError, first_line
from toolchain.runners.base import Runner

log = logging.getLogger(__name__)

_DEFAULT_THREADS: int | None = None  # ExecuTorch's own thread-pool size, read before vtool first changes it


def _set_threads(threads: int | None) -> int:
    """Size ExecuTorch's process-wide thread pool (XNNPACK uses it); None restores its default size."""
    global _DEFAULT_THREADS
    import executorch.extension.pybindings.portable_lib as lib

    current = int(lib._threadpool_get_thread_count())
    if _DEFAULT_THREADS is None:
        _DEFAULT_THREADS = current
    wanted = int(threads or _DEFAULT_THREADS)
    if wanted != current:
        lib._unsafe_reset_threadpool(wanted)
    return wanted


class ExecuTorchRunner(Runner):
    """Loads every method of the program; picks the one for each batch."""

    name = "executorch"
    devices = ("cpu",)

    def load_impl(self) -> None:
        from toolchain.export.pte import native_reason, native_stderr

        try:
            from executorch.runtime import Runtime, Verification
        except ImportError as exc:  # find_spec saw it, but it does not import (broken install)
            raise MissingDependencyError(f"executorch is installed but does not import ({exc}).") from None
        path = self.model.artifact.model_path
        with native_stderr() as logged:
            try:
                runtime = Runtime.get()
                self.pool_threads = _set_threads(self.threads)
                program = runtime.load_program(path, verification=Verification.InternalConsistency)
                methods = {name: program.load_method(name) for name in sorted(program.method_names)}
            except (RuntimeError, ValueError) as exc:
                error = exc
            else:
                error = None
        if error is not None:
            detail = native_reason(logged) or first_line(error)
            raise ArtifactError(
                f"ExecuTorch cannot load '{path}' ({detail}); the file is corrupt, truncated or not a .pte: "
                "re-export it."
            ) from None
        self.program = program
        self._methods(methods)

    def _methods(self, methods: dict[str, Any]) -> None:
        """Batch size -> method for static programs; the bound for a dynamic one (from the manifest)."""
        from toolchain.export.pte import read_batch_info

        batch = (self.model.artifact.manifest.export or {}).get("batch") or read_batch_info(
            self.model.artifact.model_path)
        self.max_batch: int | None = None
        self.by_batch: dict[int, Any] = {}
        first = next(iter(methods.values())).metadata.input_tensor_meta(0).sizes()
        # XNNPACK reads the buffer it is given as the recorded shape: a wrong H/W would run on garbage, silently
        self.input_chw = tuple(int(d) for d in first[1:])
        if batch.get("dynamic"):
            self.max_batch = int(batch["max"])
            self.dynamic_method = methods["forward"]
            return
        for method in methods.values():
            sizes = method.metadata.input_tensor_meta(0).sizes()
            if len(sizes) != 4:
                raise ArtifactError(f"'{self.model.artifact.model_path}' method '{method.metadata.name}' takes a "
                                    f"{len(sizes)}-d input; vtool runs image classifiers (N, C, H, W).")
            self.by_batch.setdefault(int(sizes[0]), method)

    @property
    def batch_sizes(self) -> str:
        self.load()
        return f"1..{self.max_batch}" if self.max_batch else ", ".join(str(b) for b in sorted(self.by_batch))

    def _check_batch(self, n: int) -> Any:
        if self.max_batch is not None:
            if 1 <= n <= self.max_batch:
                return self.dynamic_method
            hint = f"re-export with --max-batch {n}"
        elif n in self.by_batch:
            return self.by_batch[n]
        else:
            hint = f"re-export with --batch-sizes {','.join(str(b) for b in sorted({*self.by_batch, n}))}"
        raise UserInputError(
            f"{self.model.name} (.pte) was exported for batch sizes {self.batch_sizes}, got a batch of {n}; "
            f"use one of those or {hint}."
        )

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if tuple(batch.shape[1:]) != self.input_chw:
            raise UserInputError(
                f"{self.model.name} (.pte) takes images of shape {self.input_chw} (C, H, W), got "
                f"{tuple(batch.shape[1:])}; resize the input to the exported size or re-export at this size."
            )
        method = self._check_batch(batch.shape[0])
        return method.execute([torch.from_numpy(batch)])[0].numpy()

    def infer_batched(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Like Runner.infer_batched, in chunks this program accepts: at most `batch_size` and the bound of a
        dynamic program; a static one uses the largest exported size that fits, then smaller ones."""
        if batch_size < 1:
            raise UserInputError(f"batch size must be >= 1, got {batch_size}.")
        self.load()
        if self.max_batch is not None or len(x) == 0:
            return super().infer_batched(x, min(batch_size, self.max_batch or batch_size))
        sizes = sorted(self.by_batch, reverse=True)
        outputs, start = [], 0
        while start < len(x):
            left = min(batch_size, len(x) - start)
            size = next((b for b in sizes if b <= left), None)
            if size is None:  # no exported size fits what is left: the one-line batch error
                self._check_batch(left)
            outputs.append(self.infer(x[start:start + size]))
            start += size
        return np.concatenate(outputs, axis=0)

    def close_impl(self) -> None:
        self.by_batch = {}
        self.dynamic_method = None
        self.program = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.loaded:
            info["batch_sizes"] = self.batch_sizes
            info["threadpool"] = self.pool_threads
        return info
