"""LoadedModel: what every model loader returns (an eager nn.Module or an exported artifact, plus its spec)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolchain.spec import ModelSpec

if TYPE_CHECKING:
    from toolchain.artifact import Artifact


@dataclass
class LoadedModel:
    """A model ready to run: an eager nn.Module (trainable) or an exported artifact."""

    spec: ModelSpec
    origin: str
    module: Any = None
    artifact: Artifact | None = None
    checkpoint: Path | None = None
    source_hash: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path, spec: ModelSpec, origin: str | None = None) -> LoadedModel:
        """A bare .onnx/.pt2/.ts file plus the spec it needs (no manifest): what runners load from a path."""
        from toolchain.artifact import bare_model_artifact

        file = Path(path)
        return cls(spec, origin or f"file:{file}", artifact=bare_model_artifact(file, spec))

    @property
    def is_torch(self) -> bool:
        return self.module is not None

    @property
    def name(self) -> str:
        return self.artifact.name if self.artifact else self.spec.architecture

    @property
    def origin_sha256(self) -> str:
        """sha256 of the original weights this model descends from, through export -> quantize chains."""
        if self.artifact is not None:
            source = self.artifact.manifest.source
            return str(source.get("origin_sha256") or source.get("sha256") or "")
        return self.source_hash

    def describe(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "sha256": self.source_hash,
            "origin_sha256": self.origin_sha256,
            "architecture": self.spec.architecture,
        }


def module_hash(module: Any) -> str:
    """A stable hash of a module's weights (for registry models that have no file)."""
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
