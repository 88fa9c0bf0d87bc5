"""vtool checkpoints: weights + ModelSpec + JSON-like extras, saved atomically and loaded with weights_only=True.

Checkpoints are plain dicts of tensors and primitives; no user pickle is ever executed. `spec.build`
says how to rebuild the architecture (a registry name or a Hugging Face config) before the weights
are loaded strictly, with a one-line summary of any mismatch. A checkpoint of a user's class is data
too: it names the class but vtool imports it only when the user passes --model file.py:Class.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from toolchain.artifact import sha256_file
from toolchain.errors import ArtifactError, UserInputError, first_line
from toolchain.models.loaded import LoadedModel
from toolchain.outputs import atomic_write_bytes
from toolchain.spec import ModelSpec

CHECKPOINT_FORMAT = "vtool-checkpoint"
CHECKPOINT_NAME = "best.pt"
INFO_KEYS = ("config", "split", "metrics", "epoch", "data", "data_config", "options")
log = logging.getLogger(__name__)


def save_checkpoint(path: str | Path, module: Any, spec: ModelSpec, **extra: Any) -> Path:
    """Save weights + ModelSpec + anything JSON-like (config, split, metrics) atomically (unique temp name, every
    byte checked, then renamed; a full disk is an OSError naming the file)."""
    import io

    import torch

    payload = {"format": CHECKPOINT_FORMAT, "version": 1, "spec": spec.to_dict(), "state_dict": module.state_dict()}
    payload.update(extra)
    buffer = io.BytesIO()  # torch's own file writer leaves a 0-byte file on a full disk; vtool writes the bytes
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (weights_only=True); a non-vtool file is a clear error."""
    import pickle
    import zipfile

    import torch

    file = Path(path)
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except IsADirectoryError:
        raise UserInputError(f"'{file}' is a directory, expected a weights file (.pt).") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile,
            UnicodeDecodeError, KeyError, AttributeError, TypeError, IndexError) as exc:
        raise UserInputError(
            f"'{file}' is not a loadable weights file ({first_line(exc, 160, first_only=True)}); expected a vtool "
            "checkpoint or a torch.save(model.state_dict()) file. Pickled objects are never executed."
        ) from None
    if not isinstance(payload, dict):
        raise UserInputError(f"'{file}' holds a {type(payload).__name__}, expected a dict of weights.")
    return payload


def user_class_hint(spec: ModelSpec, what: str, weights: str | Path | None = None) -> str:
    """The one-line refusal for a checkpoint or artifact whose architecture is a user's class."""
    build = spec.build if isinstance(spec.build, dict) else {}
    ref = f"{build.get('path', 'path/to/file.py')}:{build.get('class', 'ClassName')}"
    return (f"{what} was built from a user class ({ref}); vtool never imports code named in a checkpoint or manifest. "
            f"If you trust that file, pass it yourself: --model {ref} --weights {weights or 'WEIGHTS.pt'}.")


def rebuild_module(spec: ModelSpec, what: str = "This model") -> Any:
    """Rebuild the architecture recorded in spec.build (without weights), from data only: a name in vtool's own
    registry or a Hugging Face config. A user class is never imported from metadata (UserInputError naming the
    --model flag to pass instead)."""
    build = spec.build
    if not isinstance(build, dict):
        raise ArtifactError(f"{what} has an invalid build record ({build!r:.60}); re-save it with this vtool.")
    kind = build.get("kind")
    if kind == "registry":
        from toolchain.models.registry import create_model

        name, kwargs = build.get("name"), build.get("kwargs", {})
        if not isinstance(name, str) or not isinstance(kwargs, dict):
            raise ArtifactError(f"{what} has an invalid registry build record ({build!r:.80}); re-save it.")
        try:
            module, _ = create_model(name, num_classes=spec.num_classes, input_size=spec.input_size,
                                     pretrained=False, **kwargs)
        except TypeError as exc:
            raise ArtifactError(f"{what} records registry model '{name}' with arguments it does not take "
                                f"({first_line(exc, 120)}); re-save it with this vtool.") from None
        return module
    if kind == "hf":
        from toolchain.models.hf import build_hf_from_config

        if not isinstance(build.get("config"), dict):
            raise ArtifactError(f"{what} has an invalid Hugging Face build record; re-save it with this vtool.")
        try:
            return build_hf_from_config(build["config"])
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
            raise ArtifactError(f"{what} records a Hugging Face config vtool cannot rebuild "
                                f"({first_line(exc, 120)}); re-save it with this vtool.") from None
    if kind == "user":
        raise UserInputError(user_class_hint(spec, what))
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


def load_weights(loaded: LoadedModel, weights: str | Path, payload: dict[str, Any] | None = None) -> LoadedModel:
    """Load a state_dict (or a vtool checkpoint's weights) into an eager model built for the same architecture.

    A vtool checkpoint of a user class (`--model file.py:Class --weights best.pt`) also gives back what it
    recorded: class names, preprocessing and training info; a different recorded class name is warned about."""
    wfile = Path(weights)
    if not wfile.is_file():
        raise UserInputError(f"Weights file '{wfile}' does not exist.")
    payload = read_checkpoint(wfile) if payload is None else payload
    is_checkpoint = payload.get("format") == CHECKPOINT_FORMAT
    state = payload.get("state_dict", payload) if is_checkpoint else payload
    load_state_dict_checked(loaded.module, state, f"Weights '{wfile}'", loaded.spec.architecture)
    recorded = recorded_spec(payload) if is_checkpoint else None
    if recorded is not None and recorded.num_classes == loaded.spec.num_classes:
        given, was = loaded.spec.build or {}, recorded.build if isinstance(recorded.build, dict) else {}
        if was.get("kind") == "user" and given.get("kind") == "user" and was.get("class") != given.get("class"):
            log.warning("'%s' was saved from class %s, loaded into %s as asked", wfile, was.get("class"),
                        given.get("class"))
        loaded.spec = recorded.replace(build=loaded.spec.build, architecture=loaded.spec.architecture)
        loaded.info = {k: payload[k] for k in INFO_KEYS if k in payload}
    loaded.checkpoint = wfile
    loaded.source_hash = sha256_file(wfile)
    return loaded


def recorded_spec(payload: dict[str, Any]) -> ModelSpec | None:
    """The ModelSpec a vtool checkpoint recorded, or None when it has no valid one (weights still load)."""
    try:
        return ModelSpec.from_dict(payload["spec"])
    except (KeyError, TypeError, ValueError, AttributeError, UserInputError):
        return None


def load_checkpoint(path: str | Path) -> LoadedModel:
    """A vtool checkpoint -> its rebuilt eager model (eval mode) with the training info it recorded."""
    file = Path(path)
    payload = read_checkpoint(file)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError(
            f"'{file}' is a plain state_dict, not a vtool checkpoint: give the architecture as the model (a "
            f"registry name or path/to/file.py:Class) and this file as --weights {file}, e.g. `vtool eval --model "
            f"mycnn.py:MyCNN --weights {file}` or `vtool parity mycnn.py:MyCNN CANDIDATE --weights {file}`."
        )
    try:
        spec = ModelSpec.from_dict(payload["spec"])
    except (KeyError, TypeError, ValueError, AttributeError, UserInputError) as exc:
        raise UserInputError(f"Checkpoint '{file}' has no valid model spec ({exc}); re-save it.") from None
    if isinstance(spec.build, dict) and spec.build.get("kind") == "user":
        raise UserInputError(user_class_hint(spec, f"Checkpoint '{file}'", file))
    module = rebuild_module(spec, f"Checkpoint '{file}'")
    load_state_dict_checked(module, payload["state_dict"], f"Checkpoint '{file}'", spec.architecture)
    module.eval()
    info = {k: payload[k] for k in INFO_KEYS if k in payload}
    return LoadedModel(spec, f"checkpoint:{file}", module=module, checkpoint=file, source_hash=sha256_file(file),
                       info=info)
