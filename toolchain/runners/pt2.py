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
        if str(self.device) != "cpu":
            # Module.to moves parameters and buffers but not the program's lifted tensor constants (a ViT's
            # class token/position ids): on CUDA forward() then mixed cuda:0 and cpu tensors.
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, self.device)
        # An exported graph is already in eval mode; ExportedProgram modules refuse .eval().
        return program.module().to(self.device)
