"""Artifact directories: a model file plus manifest.json, written atomically (DESIGN.md rule 2).

A failed or interrupted stage never leaves a half-written model or replaces a good one: every
artifact is built in a hidden temp directory beside its destination and renamed into place.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolchain.errors import ArtifactError, UserInputError
from toolchain.spec import ModelSpec

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FORMAT_FILES = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.ts", "executorch": "model.pte",
                "openvino": "model.xml"}
SUFFIX_FORMATS = {".onnx": "onnx", ".pt2": "pt2", ".ts": "torchscript", ".torchscript": "torchscript",
                  ".pte": "executorch", ".xml": "openvino"}
# Files a model file needs beside it, by suffix: an OpenVINO IR keeps its weights in model.bin next to model.xml.
FORMAT_SIDECARS = {"openvino": (".bin",)}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact (recorded, never imported eagerly)."""
    from importlib import metadata

    import toolchain

    versions = {"vtool": toolchain.__version__}
    for dist in ("torch", "torchvision", "onnx", "onnxruntime", "torchao", "transformers", "timm", "openvino",
                 "executorch"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class Manifest:
    """Everything a later stage needs to know about an artifact, and how it was made."""

    format: str
    model_file: str
    spec: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    status: str = "ok"
    export: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None
    verification: dict[str, Any] | None = None
    parity: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.format not in FORMAT_FILES:
            raise ArtifactError(f"Manifest format '{self.format}' is not one of {', '.join(FORMAT_FILES)}.")
        if self.status not in ("ok", "failed"):
            raise ArtifactError(f"Manifest status '{self.status}' must be 'ok' or 'failed'.")
        if not self.created:
            self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False, default=str)


@dataclass
class Artifact:
    """A loaded artifact directory (or a bare model file wrapped with a synthesized manifest)."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file

    @property
    def format(self) -> str:
        return self.manifest.format

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.manifest.spec)

    @property
    def model_files(self) -> list[Path]:
        """The model file and the sidecars it needs (an OpenVINO IR's .bin weights) that exist."""
        sidecars = [self.model_path.with_suffix(s) for s in FORMAT_SIDECARS.get(self.format, ())]
        return [self.model_path, *(p for p in sidecars if p.is_file())]

    @property
    def size_mb(self) -> float:
        return sum(p.stat().st_size for p in self.model_files) / 1e6

    @property
    def name(self) -> str:
        return self.path.name


def is_artifact_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def load_artifact(path: str | Path) -> Artifact:
    """Read and validate an artifact directory; every problem is a one-line ArtifactError."""
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"'{root}' is not an artifact directory: no {MANIFEST} inside. Run `vtool export` first.")
    try:
        data = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path} is not valid JSON ({exc}); re-export the model.") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{manifest_path} must hold a JSON object; re-export the model.")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{manifest_path} has schema_version {version!r}; this vtool reads version {SCHEMA_VERSION}. "
            "Re-export the model with this vtool."
        )
    try:
        manifest = Manifest(**{k: v for k, v in data.items() if k in Manifest.__dataclass_fields__})
        ModelSpec.from_dict(manifest.spec)
    except (TypeError, UserInputError) as exc:
        raise ArtifactError(f"{manifest_path} is incomplete or invalid ({exc}); re-export the model.") from None
    artifact = Artifact(root, manifest)
    if not artifact.model_path.is_file():
        raise ArtifactError(
            f"Artifact '{root}' lists model file '{manifest.model_file}' but it is missing; re-export the model."
        )
    return artifact


def require_usable(artifact: Artifact) -> Artifact:
    """Refuse an artifact whose export verification failed (status 'failed'): later stages must not use it."""
    if artifact.manifest.status != "ok":
        why = (artifact.manifest.verification or {}).get("summary", "its verification did not pass")
        raise ArtifactError(
            f"Artifact '{artifact.path}' has status '{artifact.manifest.status}' ({why}); it must not be used. "
            "Fix the model or export options and re-export."
        )
    return artifact


def bare_model_artifact(path: str | Path, spec: ModelSpec) -> Artifact:
    """Wrap a loose .onnx/.pt2/.ts file (no manifest) so runners can load it like an artifact."""
    file = Path(path)
    fmt = SUFFIX_FORMATS.get(file.suffix.lower())
    if fmt is None:
        raise UserInputError(f"'{file}' is not a model file: expected .onnx, .pt2, .ts, .pte or .xml (OpenVINO IR).")
    manifest = Manifest(format=fmt, model_file=file.name, spec=spec.to_dict(), source={"file": str(file)})
    return Artifact(file.parent, manifest)


@contextmanager
def atomic_dir(destination: str | Path) -> Iterator[Path]:
    """Yield a temp dir beside `destination`; on success it replaces `destination` in one rename.

    On any exception (KeyboardInterrupt included) the temp dir is removed and an existing
    `destination` is left exactly as it was.
    """
    dest = Path(destination)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    except OSError as exc:
        raise UserInputError(f"Cannot write to '{dest.parent}' ({exc.strerror}); choose a writable --out.") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file through a temp file and rename, so readers never see half of it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_artifact(
    destination: str | Path, manifest: Manifest, write_model: Callable[[Path], None]
) -> Artifact:
    """Build an artifact atomically: `write_model(model_path)` fills the temp dir, then it is renamed."""
    manifest.versions = manifest.versions or library_versions()
    with atomic_dir(destination) as tmp:
        write_model(tmp / manifest.model_file)
        (tmp / MANIFEST).write_text(manifest.to_json())
    return load_artifact(destination)


def save_manifest(artifact: Artifact) -> None:
    atomic_write_text(artifact.path / MANIFEST, artifact.manifest.to_json())
