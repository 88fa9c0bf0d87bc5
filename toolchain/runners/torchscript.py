"""TorchScript runner (`model.ts`). TorchScript is deprecated upstream; prefer pt2 for new work."""

from __future__ import annotations

import numpy as np

from toolchain.errors import ArtifactError
from toolchain.runners.base import Runner
from toolchain.runners.onnxrt import first_line
from toolchain.runners.torch_eager import require_cuda


class TorchScriptRunner(Runner):
    name = "torchscript"
    formats = ("torchscript",)
    devices = ("cpu", "cuda")

    def load_impl(self) -> None:
        import torch

        require_cuda(self.device)
        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.model.artifact.model_path
        try:
            self.module = torch.jit.load(str(path), map_location=self.device).eval()
        except Exception as exc:  # RuntimeError for a bad zip / missing constants.pkl
            raise ArtifactError(
                f"TorchScript cannot load '{path}' ({first_line(exc)}); the file is corrupt or not TorchScript: "
                "re-export it."
            ) from None

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(batch).to(self.device))
        return out.float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def close_impl(self) -> None:
        self.module = None
