"""Resolve any `--model` source into a LoadedModel: registry name, checkpoint, run dir, artifact
dir, bare model file, user module (file.py:Class) or Hugging Face directory / hf:org/name.

Checkpoints are plain dicts of tensors and primitives loaded with `weights_only=True`; no user
pickle is ever executed. Loading a user's own .py file runs their code, which they asked for.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.artifact import (
    SUFFIX_FORMATS,
    Artifact,
    atomic_write_text,
    bare_model_artifact,
    is_artifact_dir,
    load_artifact,
    require_usable,
    sha256_file,
)
from toolchain.errors import ArtifactError, MissingDependencyError, UserInputError
from toolchain.models import create_model, is_registered
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "vtool-checkpoint"
CHECKPOINT_NAME = "best.pt"


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


# ------------------------------------------------------------------ checkpoints


def save_checkpoint(path: str | Path, module: Any, spec: ModelSpec, **extra: Any) -> Path:
    """Save weights + ModelSpec + anything JSON-like (config, split, metrics) atomically."""
    import torch

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    payload = {"format": CHECKPOINT_FORMAT, "version": 1, "spec": spec.to_dict(), "state_dict": module.state_dict()}
    payload.update(extra)
    try:
        torch.save(payload, tmp)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (weights_only=True); a non-vtool file is a clear error."""
    import pickle

    import torch

    file = Path(path)
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(
            f"'{file}' is not a loadable weights file ({first[:160]}); expected a vtool checkpoint "
            "or a torch.save(model.state_dict()) file. Pickled objects are never executed."
        ) from None
    if not isinstance(payload, dict):
        raise UserInputError(f"'{file}' holds a {type(payload).__name__}, expected a dict of weights.")
    return payload


def rebuild_module(spec: ModelSpec) -> Any:
    """Rebuild the architecture recorded in spec.build (without weights)."""
    build = spec.build or {}
    kind = build.get("kind")
    if kind == "registry":
        module, _ = create_model(
            build["name"], num_classes=spec.num_classes, input_size=spec.input_size, pretrained=False,
            **build.get("kwargs", {}),
        )
        return module
    if kind == "hf":
        from toolchain.zoo import build_hf_from_config

        return build_hf_from_config(build["config"])
    if kind == "user":
        return _instantiate_user_class(build["path"], build["class"], spec.num_classes, spec.input_size)
    raise ArtifactError(f"Cannot rebuild architecture '{spec.architecture}': unknown build kind {kind!r}.")


def load_state_dict_checked(module: Any, state_dict: dict[str, Any], what: str, arch: str) -> None:
    """load_state_dict(strict) with a one-line summary of mismatched keys or shapes."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (first: {shapes[0]})")
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
        raise UserInputError(
            f"{what} does not match architecture '{arch}': {'; '.join(parts)}. "
            "Use weights saved from the same model and class count."
        )
    module.load_state_dict(state_dict, strict=True)


def load_checkpoint(path: str | Path) -> LoadedModel:
    file = Path(path)
    payload = read_checkpoint(file)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError(
            f"'{file}' is a plain state_dict, not a vtool checkpoint; pass it as --weights with "
            "--model NAME (or file.py:Class) so vtool knows the architecture."
        )
    try:
        spec = ModelSpec.from_dict(payload["spec"])
    except (KeyError, TypeError) as exc:
        raise UserInputError(f"Checkpoint '{file}' has no valid model spec ({exc}).") from None
    module = rebuild_module(spec)
    load_state_dict_checked(module, payload["state_dict"], f"Checkpoint '{file}'", spec.architecture)
    module.eval()
    info = {k: payload[k] for k in ("config", "split", "metrics", "epoch", "data", "data_config") if k in payload}
    return LoadedModel(spec, f"checkpoint:{file}", module=module, checkpoint=file, source_hash=sha256_file(file),
                       info=info)


# ------------------------------------------------------------------ user modules and HF


def _parse_user_ref(source: str) -> tuple[Path, str] | None:
    if ".py:" not in source:
        return None
    path, _, cls = source.rpartition(":")
    return Path(path), cls


def _instantiate_user_class(path: str | Path, cls_name: str, num_classes: int, input_size: tuple[int, int]) -> Any:
    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"Model file '{file}' does not exist; expected path/to/file.py:ClassName.")
    mod_name = f"vtool_user_{hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:10]}"
    module = sys.modules.get(mod_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(mod_name, file)
        if spec is None or spec.loader is None:
            raise UserInputError(f"Cannot import '{file}' as a Python module.")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's own code failed to import
            raise UserInputError(f"Importing '{file}' failed: {type(exc).__name__}: {exc}") from None
        sys.modules[mod_name] = module
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise UserInputError(f"'{file}' has no class '{cls_name}'.")
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "num_classes" in params:
        kwargs["num_classes"] = num_classes
    if "input_size" in params:
        kwargs["input_size"] = tuple(input_size)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise UserInputError(f"Cannot construct {cls_name} from '{file}': {exc}.") from None


def load_user_module(source: str, num_classes: int | None, input_size: tuple[int, int] | None,
                     class_names: tuple[str, ...] = ()) -> LoadedModel:
    path, cls_name = _parse_user_ref(source)  # type: ignore[misc]
    n = num_classes or (len(class_names) if class_names else 10)
    size = tuple(input_size or (32, 32))
    module = _instantiate_user_class(path, cls_name, n, size)
    spec = ModelSpec(
        architecture=f"{path.stem}:{cls_name}", num_classes=n, input_size=size, class_names=class_names,
        build={"kind": "user", "path": str(path.resolve()), "class": cls_name},
    )
    return LoadedModel(spec, f"user:{source}", module=module.eval())


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the Hugging Face endpoint, so offline machines fail in seconds, not after retries."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def load_hf(source: str) -> LoadedModel:
    """A local save_pretrained directory, or hf:org/name (needs the network; never remote code)."""
    try:
        from transformers import AutoImageProcessor, AutoModelForImageClassification
    except ImportError as exc:
        raise MissingDependencyError("Hugging Face models need transformers: pip install transformers.") from exc
    ref = source[3:] if source.startswith("hf:") else source
    hub_hint = (f"Could not fetch '{ref}' from the Hugging Face hub (offline or unknown name). Download it where "
                "online with save_pretrained(DIR) and pass --model DIR.")
    if source.startswith("hf:") and not hub_reachable():
        raise MissingDependencyError(hub_hint)
    try:
        model = AutoModelForImageClassification.from_pretrained(ref, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        if source.startswith("hf:"):
            raise MissingDependencyError(hub_hint) from None
        raise UserInputError(f"'{ref}' is not a loadable Hugging Face image classifier: {str(exc)[:200]}") from None
    config = model.config
    size = config.image_size if isinstance(getattr(config, "image_size", None), int) else 224
    mean, std, interp = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear"
    try:
        proc = AutoImageProcessor.from_pretrained(ref)
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
    except (OSError, ValueError, AttributeError):
        log.info("no image processor config in %s; using mean/std 0.5", ref)
    labels = tuple(config.id2label[i] for i in range(config.num_labels)) if config.id2label else ()
    from toolchain.zoo import make_hf_wrapper

    spec = ModelSpec(
        architecture=f"hf:{config.model_type}", num_classes=config.num_labels, input_size=(size, size),
        channels=getattr(config, "num_channels", 3), mean=mean, std=std, interpolation=interp,
        class_names=labels, build={"kind": "hf", "config": config.to_dict()},
    )
    wrapped = make_hf_wrapper(model).eval()
    return LoadedModel(spec, f"hf:{ref}", module=wrapped, source_hash=module_hash(wrapped))


# ------------------------------------------------------------------ the one entry point


def load_model(
    source: str,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    input_size: tuple[int, int] | None = None,
    pretrained: bool | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
) -> LoadedModel:
    """Resolve `source` (see module docstring) into a LoadedModel; every failure is a VtoolError."""
    names = tuple(class_names or ())
    path = Path(source)
    if source.startswith("hf:"):
        return load_hf(source)
    user_ref = _parse_user_ref(source)
    if user_ref is not None:
        loaded = load_user_module(source, num_classes, input_size, names)
    elif is_registered(source):
        module, spec = create_model(source, num_classes=num_classes, input_size=input_size,
                                    pretrained=pretrained, class_names=names)
        loaded = LoadedModel(spec, f"registry:{source}", module=module.eval())
    elif path.is_dir():
        if is_artifact_dir(path):
            artifact = require_usable(load_artifact(path))
            return LoadedModel(artifact.spec, f"artifact:{path}", artifact=artifact,
                               source_hash=sha256_file(artifact.model_path))
        if (path / CHECKPOINT_NAME).is_file():
            return load_checkpoint(path / CHECKPOINT_NAME)
        if (path / "config.json").is_file():
            return load_hf(str(path))
        raise UserInputError(
            f"Directory '{path}' holds no {CHECKPOINT_NAME}, manifest.json or config.json; expected a training run, "
            "an artifact or a Hugging Face model directory."
        )
    elif path.is_file():
        if path.suffix.lower() in SUFFIX_FORMATS:
            spec = ModelSpec(architecture=path.stem, num_classes=num_classes or 10,
                             input_size=tuple(input_size or (32, 32)), class_names=names)
            artifact = bare_model_artifact(path, spec)
            return LoadedModel(spec, f"file:{path}", artifact=artifact, source_hash=sha256_file(path))
        return load_checkpoint(path)
    else:
        from toolchain.models import get_entry

        get_entry(source)  # raises the "unknown model" message with suggestions
        raise AssertionError("unreachable")
    if weights is not None:
        wfile = Path(weights)
        if not wfile.is_file():
            raise UserInputError(f"Weights file '{wfile}' does not exist.")
        payload = read_checkpoint(wfile)
        state = payload.get("state_dict", payload) if payload.get("format") == CHECKPOINT_FORMAT else payload
        load_state_dict_checked(loaded.module, state, f"Weights '{wfile}'", loaded.spec.architecture)
        loaded.checkpoint = wfile
        loaded.source_hash = sha256_file(wfile)
    if not loaded.source_hash:
        loaded.source_hash = module_hash(loaded.module)
    return loaded


def write_json(path: str | Path, data: Any) -> None:
    """Write a result as pretty JSON atomically (used by every --json flag)."""
    import json

    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
