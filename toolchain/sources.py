"""Resolve any `--model` source into a LoadedModel: this module only dispatches to the loaders in
toolchain.models (registry name, checkpoint or run dir, artifact dir, bare model file, user module
file.py:Class, Hugging Face directory or hf:org/name).
"""

from __future__ import annotations

from pathlib import Path

from toolchain.artifact import SUFFIX_FORMATS, is_artifact_dir, load_artifact, require_usable, sha256_file
from toolchain.errors import UserInputError
from toolchain.models import LoadedModel, create_model, get_entry, is_registered, module_hash
from toolchain.models.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    load_checkpoint,
    load_weights,
    read_checkpoint,
    recorded_spec,
)
from toolchain.models.hf import load_hf
from toolchain.models.probe import probe_module
from toolchain.models.user import load_user_module, parse_user_ref
from toolchain.spec import ModelSpec


def load_model(
    source: str,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    input_size: tuple[int, int] | None = None,
    pretrained: bool | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
) -> LoadedModel:
    """Resolve `source` (see module docstring) into a LoadedModel; every failure is a VtoolError. An eager model
    is probed once with a zero batch: it must answer (N, num_classes) logits (toolchain.models.probe)."""
    loaded = _resolve(source, weights, num_classes, input_size, pretrained, tuple(class_names or ()))
    if num_classes is not None and num_classes != loaded.spec.num_classes:
        raise UserInputError(f"--num-classes {num_classes} conflicts with '{source}', which records "
                             f"{loaded.spec.num_classes} classes; leave --num-classes out.")
    if loaded.is_torch:
        probe_module(loaded.module, loaded.spec, f"Model '{source}'")
    return loaded


def _resolve(source: str, weights: str | Path | None, num_classes: int | None, input_size: tuple[int, int] | None,
             pretrained: bool | None, names: tuple[str, ...]) -> LoadedModel:
    path = Path(source)
    if source.startswith("hf:"):
        return load_hf(source)
    payload = None
    if parse_user_ref(source) is not None:
        if weights is not None and Path(weights).is_file():  # a vtool checkpoint says which head and size to build
            payload = read_checkpoint(weights)
            recorded = recorded_spec(payload) if payload.get("format") == CHECKPOINT_FORMAT else None
            if recorded is not None:
                num_classes = num_classes or recorded.num_classes
                input_size = input_size or recorded.input_size
        loaded = load_user_module(source, num_classes, input_size, names)
    elif is_registered(source):
        module, spec = create_model(source, num_classes=num_classes, input_size=input_size,
                                    pretrained=pretrained, class_names=names)
        loaded = LoadedModel(spec, f"registry:{source}", module=module.eval())
    elif path.is_dir():
        return _load_dir(path)
    elif path.is_file():
        if path.suffix.lower() in SUFFIX_FORMATS:
            spec = ModelSpec(architecture=path.stem, num_classes=num_classes or 10,
                             input_size=tuple(input_size or (32, 32)), class_names=names)
            loaded = LoadedModel.from_file(path, spec)
            loaded.source_hash = sha256_file(path)
            return loaded
        return load_checkpoint(path)
    else:
        get_entry(source)  # raises the "unknown model" message with suggestions
        raise AssertionError("unreachable")
    if weights is not None:
        load_weights(loaded, weights, payload)
    if not loaded.source_hash:
        loaded.source_hash = module_hash(loaded.module)
    return loaded


def _load_dir(path: Path) -> LoadedModel:
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


def as_loaded(model: LoadedModel | str) -> LoadedModel:
    """Library entry points take a LoadedModel or any --model source string."""
    return model if isinstance(model, LoadedModel) else load_model(str(model))

