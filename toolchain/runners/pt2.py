"""torch.export runner: `.pt2` artifacts loaded with torch.export.load(...).module()."""

from __future__ import annotations

from typing import Any

from toolchain.errors import ArtifactError, first_line
from toolchain.runners.torch_eager import TorchModuleRunner


class Pt2Runner(TorchModuleRunner):
    name = "pt2"

    def build_module(self) -> Any:
        import torch

        path = self.model.artifact.model_path
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # zip errors, unpickling errors, version mismatches
            raise ArtifactError(
                f"torch.export cannot load '{path}' ({first_line(exc)}); the file is corrupt or not a .pt2: "
                "re-export it."
            ) from None
        # An exported graph is already in eval mode; ExportedProgram modules refuse .eval().
        return program.module().to(self.device)
