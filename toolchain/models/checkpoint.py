"""vtool checkpoints: weights + ModelSpec + JSON-like extras, saved atomically and loaded with weights_only=True.

Checkpoints are plain dicts of tensors and primitives; no user pickle is ever executed. `spec.build`
says how to rebuild the architecture (registry, Hugging Face config or user class) before the
weights are loaded strictly, with a one-line summary of any mismatch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolchain.artifact import sha256_file
from toolchain.errors import ArtifactError, UserInputError, first_line
from toolchain.models.loaded import LoadedModel
from toolchain.spec import ModelSpec

CHECKPOINT_FORMAT = "vtool-checkpoint"
CHECKPOINT_NAME = "best.pt"


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
        raise UserInputError(
            f"'{file}' is not a loadable weights file ({first_line(exc, 160, first_only=True)}); expected a vtool "
            "checkpoint or a torch.save(model.state_dict()) file. Pickled objects are never executed."
        ) from None
    if not isinstance(payload, dict):
        raise UserInputError(f"'{file}' holds a {type(payload).__name__}, expected a dict of weights.")
    return payload


def rebuild_module(spec: ModelSpec) -> Any:
    """Rebuild the architecture recorded in spec.build (without weights)."""
    build = spec.build or {}
    kind = build.get("kind")
    if kind == "registry":
        from toolchain.models.registry import create_model

        module, _ = create_model(
            build["name"], num_classes=spec.num_classes, input_size=spec.input_size, pretrained=False,
            **build.get("kwargs", {}),
        )
        return module
    if kind == "hf":
        from toolchain.models.hf import build_hf_from_config

        return build_hf_from_config(build["config"])
    if kind == "user":
        from toolchain.models.user import instantiate_user_class

        return instantiate_user_class(build["path"], build["class"], spec.num_classes, spec.input_size)
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


def load_weights(loaded: LoadedModel, weights: str | Path) -> LoadedModel:
    """Load a state_dict (or a vtool checkpoint's weights) into an eager model built for the same architecture."""
    wfile = Path(weights)
    if not wfile.is_file():
        raise UserInputError(f"Weights file '{wfile}' does not exist.")
    payload = read_checkpoint(wfile)
    state = payload.get("state_dict", payload) if payload.get("format") == CHECKPOINT_FORMAT else payload
    load_state_dict_checked(loaded.module, state, f"Weights '{wfile}'", loaded.spec.architecture)
    loaded.checkpoint = wfile
    loaded.source_hash = sha256_file(wfile)
    return loaded


def load_checkpoint(path: str | Path) -> LoadedModel:
    """A vtool checkpoint -> its rebuilt eager model (eval mode) with the training info it recorded."""
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
