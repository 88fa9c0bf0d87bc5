"""TorchScript runner (`model.ts`). TorchScript is deprecated upstream; prefer pt2 for new work."""

from __future__ import annotations

from typing import Any

from toolchain.errors import ArtifactError, first_line
from toolchain.runners.torch_eager import TorchModuleRunner


class TorchScriptRunner(TorchModuleRunner):
    name = "torchscript"

    def build_module(self) -> Any:
        import torch

        path = self.model.artifact.model_path
        try:
            return torch.jit.load(str(path), map_location=self.device).eval()
        except Exception as exc:  # RuntimeError for a bad zip / missing constants.pkl
            raise ArtifactError(
                f"TorchScript cannot load '{path}' ({first_line(exc)}); the file is corrupt or not TorchScript: "
                "re-export it."
            ) from None
