"""The Runner interface (after Polygraphy's BaseRunner): load once, infer many, close.

`infer()` checks the input against the ModelSpec, then calls the backend's `infer_impl`, so
every backend rejects wrong shapes with the same one-line message.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from toolchain.errors import UserInputError
from toolchain.models import LoadedModel
from toolchain.models.probe import check_logits

DEVICES = ("cpu", "cuda")


class Runner(abc.ABC):
    """One backend running one model on one device. Use as a context manager."""

    name: str = "base"
    devices: tuple[str, ...] = ("cpu",)

    def __init__(self, model: LoadedModel, device: str = "cpu", threads: int | None = None, **options: Any) -> None:
        self.model = model
        self.spec = model.spec
        self.device = device
        self.threads = threads
        self.options = options
        self.loaded = False

    # lifecycle -------------------------------------------------------------
    def __enter__(self) -> Runner:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self) -> None:
        if not self.loaded:
            self.load_impl()
            self.loaded = True

    def close(self) -> None:
        if self.loaded:
            self.close_impl()
            self.loaded = False

    # inference -------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run a float32 NCHW batch; return float32 logits of shape (N, num_classes)."""
        self.check_input(batch)
        if not self.loaded:
            self.load()
        out = self.infer_impl(np.ascontiguousarray(batch, dtype=np.float32))
        check_logits(out, self.spec, f"{self.model.name} ({self.name} runner)")
        return np.asarray(out, dtype=np.float32)

    def infer_batched(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Logits for all of `x`, fed in chunks of `batch_size` (the last one may be smaller): the one place
        vtool runs a whole image set through a model."""
        if batch_size < 1:
            raise UserInputError(f"batch size must be >= 1, got {batch_size}.")
        if len(x) == 0:
            self.check_input(x)
            return np.zeros((0, self.spec.num_classes), dtype=np.float32)
        return np.concatenate([self.infer(x[i : i + batch_size]) for i in range(0, len(x), batch_size)], axis=0)

    def check_input(self, batch: np.ndarray) -> None:
        expected = (self.spec.channels, *self.spec.input_size)
        if not isinstance(batch, np.ndarray) or batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            shape = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
            raise UserInputError(
                f"{self.name} runner got input of shape {shape}; expected (N, {', '.join(map(str, expected))}) "
                f"for {self.model.name}. Resize the images to the model's input size."
            )

    @abc.abstractmethod
    def load_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, batch: np.ndarray) -> np.ndarray: ...

    def close_impl(self) -> None:  # noqa: B027 - optional hook
        """Release sessions or memory; most backends need nothing."""

    def synchronize(self) -> None:  # noqa: B027 - optional hook
        """Wait for queued device work (CUDA); bench.py calls it before reading the clock."""

    def describe(self) -> dict[str, Any]:
        return {"runner": self.name, "device": self.device, "threads": self.threads, "model": self.model.name}
