"""Eager PyTorch runner (CPU or CUDA, optional channels_last): the reference every other backend meets."""

from __future__ import annotations

from typing import Any

import numpy as np

from toolchain.errors import MissingDependencyError
from toolchain.runners.base import Runner


def require_cuda(device: str) -> None:
    """Fail with a clear message when CUDA is asked for but absent."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise MissingDependencyError("--device cuda was requested but no CUDA GPU is available here; use --device cpu.")


class TorchRunner(Runner):
    name = "torch"
    formats = ("torch",)
    devices = ("cpu", "cuda")

    def load_impl(self) -> None:
        import torch

        require_cuda(self.device)
        if self.threads:
            torch.set_num_threads(self.threads)
        self.module = self.model.module.eval().to(self.device)
        self.memory_format = torch.channels_last if self.options.get("channels_last") else torch.contiguous_format
        if self.options.get("channels_last"):
            self.module = self.module.to(memory_format=torch.channels_last)

    def to_device(self, batch: np.ndarray) -> Any:
        import torch

        tensor = torch.from_numpy(batch)
        if self.device == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.contiguous(memory_format=self.memory_format)

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.module(self.to_device(batch))
        return out.float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def close_impl(self) -> None:
        if self.device == "cuda":
            self.model.module.to("cpu")
