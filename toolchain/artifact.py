"""Artifact directories: a model file plus manifest.json, written atomically (DESIGN.md rule 2).

A failed or interrupted stage never leaves a half-written model or replaces a good one: every
artifact is built in a hidden temp directory beside its destination and renamed into place
(toolchain.outputs). A manifest is plain data anyone can edit, so loading one checks it: every
field's type, a model file that stays inside the directory, and the sha256 of each file it lists.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from toolchain.errors import ArtifactError, UserInputError
from toolchain.outputs import atomic_dir, atomic_write_text  # noqa: F401 - re-exported: the artifact writers
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FORMAT_FILES = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.ts"}
SUFFIX_FORMATS = {".onnx": "onnx", ".pt2": "pt2", ".ts": "torchscript", ".torchscript": "torchscript"}


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
    for dist in ("torch", "torchvision", "onnx", "onnxruntime", "torchao", "transformers", "timm", "openvino"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "format": str, "model_file": str, "spec": dict, "source": dict, "precision": str, "status": str, "export": dict,
    "quantization": (dict, type(None)), "verification": (dict, type(None)), "parity": list, "versions": dict,
    "created": str, "files": dict,
}


def _type_names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else {"dict": "JSON object", "list": "JSON list",
                                                         "str": "string"}.get(k.__name__, k.__name__) for k in kinds)


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
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256, recorded when written

    def __post_init__(self) -> None:
        for name, kind in _FIELD_TYPES.items():
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise ArtifactError(f"Manifest field '{name}' must be a {_type_names(kind)}, got {value!r:.60}.")
        if self.format not in FORMAT_FILES:
            raise ArtifactError(f"Manifest format '{self.format}' is not one of {', '.join(FORMAT_FILES)}.")
        if self.status not in ("ok", "failed"):
            raise ArtifactError(f"Manifest status '{self.status}' must be 'ok' or 'failed'.")
        if not self.model_file or not all(isinstance(v, str) for v in self.files.values()):
            raise ArtifactError("Manifest model_file must name a file and files must map names to sha256 strings.")
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
    def size_mb(self) -> float:
        return self.model_path.stat().st_size / 1e6

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
    except (TypeError, ValueError, AttributeError, KeyError, UserInputError, ArtifactError) as exc:
        raise ArtifactError(f"{manifest_path} is incomplete or invalid ({exc}); re-export the model.") from None
    for name in (manifest.model_file, *manifest.files):
        confined(root, name, manifest_path)
    artifact = Artifact(root, manifest)
    if not artifact.model_path.is_file():
        raise ArtifactError(
            f"Artifact '{root}' lists model file '{manifest.model_file}' but it is missing; re-export the model."
        )
    verify_files(artifact, manifest_path)
    return artifact


def confined(root: Path, name: str, manifest_path: Path) -> Path:
    """`root/name`, refused unless it stays inside `root`: a manifest is editable data, never a path to follow."""
    parts = PurePosixPath(name.replace("\\", "/"))
    target = root / name
    if parts.is_absolute() or ".." in parts.parts or not (target.resolve() == root.resolve()
                                                           or root.resolve() in target.resolve().parents):
        raise ArtifactError(f"{manifest_path} lists model_file '{name}', which is not a file inside '{root}'; "
                            "vtool opens only files inside the artifact. Re-export the model.")
    return target


_UNVERIFIED_WARNED: set[str] = set()


def verify_files(artifact: Artifact, manifest_path: Path) -> None:
    """Every file the manifest lists must still have the sha256 recorded when it was written."""
    files = artifact.manifest.files
    if not files:
        if str(artifact.path) not in _UNVERIFIED_WARNED:
            _UNVERIFIED_WARNED.add(str(artifact.path))
            log.warning("%s records no sha256 of its model file (written by an older vtool), so a changed file "
                        "goes unnoticed; re-export it to record one", manifest_path)
        return
    if artifact.manifest.model_file not in files:
        raise ArtifactError(f"{manifest_path} records no sha256 for its model file '{artifact.manifest.model_file}'; "
                            "re-export the model.")
    for name, digest in files.items():
        file = artifact.path / name
        if not file.is_file():
            raise ArtifactError(f"Artifact '{artifact.path}' lists '{name}' but it is missing; re-export the model.")
        if sha256_file(file) != digest:
            raise ArtifactError(f"'{file}' does not match the sha256 recorded in {manifest_path} ({digest[:12]}...): "
                                "it changed after it was written. Restore the original file or re-export the model.")


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
        raise UserInputError(f"'{file}' is not a model file: expected .onnx, .pt2 or .ts.")
    manifest = Manifest(format=fmt, model_file=file.name, spec=spec.to_dict(), source={"file": str(file)})
    return Artifact(file.parent, manifest)


def record_files(manifest: Manifest, folder: Path) -> None:
    """sha256 of every file an artifact holds (the manifest aside), checked again by load_artifact."""
    manifest.files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}


def write_artifact(destination: str | Path, manifest: Manifest, write_model: Callable[[Path], None], *,
                   overwrite: bool = False) -> Artifact:
    """Build an artifact atomically: `write_model(model_path)` fills the staging dir, the file hashes go into the
    manifest, then it is renamed into place (an existing artifact is replaced only with `overwrite`)."""
    manifest.versions = manifest.versions or library_versions()
    with atomic_dir(destination, overwrite=overwrite) as tmp:
        write_model(tmp / manifest.model_file)
        record_files(manifest, tmp)
        atomic_write_text(tmp / MANIFEST, manifest.to_json())
    return load_artifact(destination)


def save_manifest(artifact: Artifact) -> None:
    atomic_write_text(artifact.path / MANIFEST, artifact.manifest.to_json())
