"""torch.export runner: `.pt2` artifacts loaded with torch.export.load(...).module()."""

from __future__ import annotations

from typing import Any

import numpy as np

from toolchain.errors import ArtifactError
from toolchain.runners.base import Runner
from toolchain.runners.onnxrt import first_line
from toolchain.runners.torch_eager import require_cuda


class Pt2Runner(Runner):
    name = "pt2"
    formats = ("pt2",)
    devices = ("cpu", "cuda")

    def load_impl(self) -> None:
        import torch

        require_cuda(self.device)
        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.model.artifact.model_path
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # zip errors, unpickling errors, version mismatches
            raise ArtifactError(
                f"torch.export cannot load '{path}' ({first_line(exc)}); the file is corrupt or not a .pt2: "
                "re-export it."
            ) from None
        # An exported graph is already in eval mode; ExportedProgram modules refuse .eval().
        self.module = program.module().to(self.device)

    def to_device(self, batch: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(batch).to(self.device)

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.module(self.to_device(batch))
        return out.float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def close_impl(self) -> None:
        self.module = None
