"""Eager PyTorch runner (CPU or CUDA, optional channels_last): the reference every other backend meets."""

from __future__ import annotations

from typing import Any

import numpy as np

from toolchain.errors import MissingDependencyError
from toolchain.models.probe import call_module
from toolchain.runners.base import Runner


def require_cuda(device: str) -> None:
    """Fail with a clear message when CUDA is asked for but absent."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise MissingDependencyError("--device cuda was requested but no CUDA GPU is available here; use --device cpu.")


class TorchModuleRunner(Runner):
    """Shared by every runner that ends up calling a torch module (eager, compiled, pt2, TorchScript):
    thread count, CUDA check, pinned host-to-device copies, synchronize. Subclasses build the module."""

    devices = ("cpu", "cuda")

    def load_impl(self) -> None:
        import torch

        require_cuda(self.device)
        if self.threads:
            torch.set_num_threads(self.threads)
        self.memory_format = torch.channels_last if self.options.get("channels_last") else torch.contiguous_format
        self.module = self.build_module()

    def build_module(self) -> Any:
        raise NotImplementedError

    def to_device(self, batch: np.ndarray) -> Any:
        import torch

        tensor = torch.from_numpy(batch)
        if self.device == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.contiguous(memory_format=self.memory_format)

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = call_module(self.module, self.to_device(batch), f"{self.model.name} ({self.name} runner)")
        return out.float().cpu().numpy() if isinstance(out, torch.Tensor) else out

    def synchronize(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def close_impl(self) -> None:
        self.module = None


class TorchRunner(TorchModuleRunner):
    name = "torch"

    def build_module(self) -> Any:
        import torch

        module = self.model.module
        try:
            module = module.eval()
        except NotImplementedError:  # torch.export graphs (e.g. torchao PT2E INT8) refuse .eval(): already inference
            pass
        module = module.to(self.device)
        if self.options.get("channels_last"):
            module = module.to(memory_format=torch.channels_last)
        return module

    def close_impl(self) -> None:
        import torch

        if self.device == "cuda":
            self.model.module.to("cpu")
        if self.options.get("channels_last"):  # Module.to works in place: give the caller's module back as it was
            self.model.module.to(memory_format=torch.contiguous_format)
