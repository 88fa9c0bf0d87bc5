"""Resolve any `--model` source into a LoadedModel: dispatch to the loaders in toolchain.models (registry name,
checkpoint or run dir, artifact dir, bare model file, user module file.py:Class, Hugging Face directory or
hf:org/name), with the shared model options (models/config.py) applied the same way to every kind.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

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
from toolchain.models.config import ModelOptions, apply_options, data_class_names
from toolchain.models.hf import load_hf
from toolchain.models.probe import probe_module
from toolchain.models.user import load_user_module, parse_user_ref
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)


def load_model(
    source: str,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    input_size: tuple[int, int] | None = None,
    pretrained: bool | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
    options: ModelOptions | None = None,
    data: str | None = None,
    like: ModelSpec | None = None,
) -> LoadedModel:
    """Resolve `source` (see module docstring) into a LoadedModel; every failure is a VtoolError.

    `options` carries the shared model flags and --config (the keyword arguments override it); `data` is the
    --data source, whose class folders name the classes when nothing else does; `like` is a spec to borrow
    what neither says, for a model built or read without one (parity's candidate borrows the reference's).
    """
    opts = (options or ModelOptions()).merged(
        weights=str(weights) if weights is not None else None, num_classes=num_classes,
        input_size=tuple(input_size) if input_size is not None else None, pretrained=pretrained,
        class_names=tuple(class_names) if class_names else None)
    data_names = data_class_names(data)
    path = Path(source)
    builds = builds_architecture(source)
    if opts.weights is not None and not builds:
        raise UserInputError(f"--weights applies to a registry name or file.py:Class; '{source}' already holds its "
                             "weights (drop --weights, or name the architecture and pass the file as --weights).")
    if builds:
        loaded = _build(source, opts, data_names, like)
    elif source.startswith("hf:") or (path.is_dir() and not is_artifact_dir(path)
                                      and not (path / CHECKPOINT_NAME).is_file() and (path / "config.json").is_file()):
        loaded = load_hf(source)
        loaded.spec = apply_options(loaded.spec, opts, loaded.name, recorded=True, data_names=data_names)
    elif path.is_dir():
        loaded = _load_dir(path)
        loaded.spec = apply_options(loaded.spec, opts, loaded.name, recorded=True, data_names=data_names)
    elif path.is_file() and path.suffix.lower() in SUFFIX_FORMATS:
        return _bare_file(path, opts, data_names, like)
    elif path.is_file():
        loaded = load_checkpoint(path)
        loaded.spec = apply_options(loaded.spec, opts, loaded.name, recorded=True, data_names=data_names)
    else:
        get_entry(source)  # raises the "unknown model" message with suggestions
        raise AssertionError("unreachable")
    loaded.info.setdefault("pretrained", True)  # checkpoints, artifacts and HF directories carry trained weights
    if not opts.is_empty:
        loaded.info["options"] = opts.to_dict()
    if loaded.is_torch:  # it must answer (N, num_classes) logits for an image of its spec (models/probe.py)
        probe_module(loaded.module, loaded.spec, f"Model '{source}'")
    if not loaded.source_hash and loaded.module is not None:
        loaded.source_hash = module_hash(loaded.module)
    return loaded


def builds_architecture(source: str) -> bool:
    """A registry name or file.py:Class: vtool builds the network (so --weights and --num-classes apply)."""
    return parse_user_ref(source) is not None or is_registered(source)


def options_for(source: str, options: ModelOptions | None) -> ModelOptions | None:
    """The part of shared options a source can take when one set of flags serves several models (bench):
    --weights only for a source vtool builds, structure (--num-classes, --input-size) not for a model that
    records it (checkpoint, artifact, HF directory)."""
    if options is None or builds_architecture(source):
        return options
    if Path(source).is_file() and Path(source).suffix.lower() in SUFFIX_FORMATS:
        return replace(options, weights=None)
    return replace(options, weights=None, num_classes=None, input_size=None)


def _build(source: str, opts: ModelOptions, data_names: tuple[str, ...] | None,
           like: ModelSpec | None) -> LoadedModel:
    """A registry name or file.py:Class built for the resolved class count, with --weights loaded strictly.

    Class count: --num-classes > the weights' head > the number of --labels > `like` > the model's own
    default (registry entry, or the class's constructor default) > the data's class folders. A vtool checkpoint
    given as --weights also gives its recorded input size, preprocessing and class names (the options win).
    """
    payload, state = _read_weights(opts.weights) if opts.weights else (None, None)
    recorded = recorded_spec(payload) if payload and payload.get("format") == CHECKPOINT_FORMAT else None
    from_names = len(opts.class_names) if opts.class_names else None
    n = opts.num_classes or head_size(state) or from_names or (like.num_classes if like else None)
    size = (opts.input_size or (tuple(recorded.input_size) if recorded else None)
            or (tuple(like.input_size) if like else None))
    if parse_user_ref(source) is not None:
        if n is None:
            from toolchain.models.user import constructor_defaults, user_class

            path, cls = parse_user_ref(source)  # type: ignore[misc]
            if constructor_defaults(user_class(path, cls))["num_classes"] is None and data_names:
                n = len(data_names)
        loaded = load_user_module(source, n, size, channels=opts.channels or (like.channels if like else 3))
        if opts.weights is not None and opts.input_size is None and opts.mean is None and opts.config is None:
            spec = loaded.spec
            log.warning("%s: no --config/--input-size/--mean/--std given; assuming %dx%d input with mean/std 0.5. "
                        "Pass the preprocessing it was trained with (see README: config file).", spec.architecture,
                        *spec.input_size)
        pretrained = opts.weights is not None
    else:
        module, spec = create_model(source, num_classes=n, input_size=size, pretrained=opts.pretrained)
        pretrained = bool(opts.pretrained if opts.pretrained is not None else get_entry(source).pretrained_by_default)
        loaded = LoadedModel(spec, f"registry:{source}", module=module.eval())
        pretrained = pretrained or opts.weights is not None
    if like is not None and opts.mean is None and opts.std is None:
        like_prep = {k: getattr(like, k) for k in ("mean", "std", "interpolation", "crop_pct")}
        loaded.spec = loaded.spec.replace(**like_prep) if like.channels == loaded.spec.channels else loaded.spec
    names = data_names if data_names and len(data_names) == loaded.spec.num_classes else None
    if like is not None and like.class_names and len(like.class_names) == loaded.spec.num_classes:
        names = like.class_names
    loaded.spec = apply_options(loaded.spec, opts, loaded.name, recorded=False, data_names=names)
    if payload is not None:  # a vtool checkpoint as --weights also gives back what it recorded (spec, split...)
        load_weights(loaded, opts.weights, payload)  # type: ignore[arg-type]
        loaded.module.eval()
        if recorded is not None:  # what the options say still wins over what the checkpoint recorded
            loaded.spec = apply_options(loaded.spec, opts, loaded.name, recorded=False, data_names=names)
    loaded.info["pretrained"] = pretrained
    return loaded


def _read_weights(weights: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A --weights file's payload and state_dict (a plain torch.save(state_dict) or a vtool checkpoint's)."""
    file = Path(weights)
    if not file.is_file():
        raise UserInputError(f"Weights file '{file}' does not exist.")
    payload = read_checkpoint(file)
    state = payload.get("state_dict", payload) if payload.get("format") == CHECKPOINT_FORMAT else payload
    return payload, state


def head_size(state: dict[str, Any] | None) -> int | None:
    """The class count a state_dict's last layer implies (its final bias or weight rows); None when unclear."""
    if not state:
        return None
    for key, tensor in reversed(list(state.items())):
        shape = tuple(getattr(tensor, "shape", ()))
        if not shape or key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        if key.endswith("bias") and len(shape) == 1:
            return int(shape[0])
        return int(shape[0]) if key.endswith("weight") and len(shape) == 2 else None
    return None


def _bare_file(path: Path, opts: ModelOptions, data_names: tuple[str, ...] | None,
               like: ModelSpec | None) -> LoadedModel:
    """A loose .onnx/.pt2/.ts file: its spec comes from the options, the ONNX graph's own shapes, `like`, then
    the data (the class count), with a warning for whatever had to be assumed."""
    graph = onnx_shapes(path) if path.suffix.lower() == ".onnx" else {}
    names = opts.class_names or (like.class_names if like else None) or None
    n = (opts.num_classes or (len(names) if names else None) or graph.get("num_classes")
         or (like.num_classes if like else None) or (len(data_names) if data_names else None))
    size = opts.input_size or graph.get("input_size") or (tuple(like.input_size) if like else None)
    channels = opts.channels or graph.get("channels") or (like.channels if like else 3)
    assumed = [what for what, value in (("10 classes", n), ("32x32 input", size)) if value is None]
    if assumed:
        log.warning("%s: %s assumed; pass --num-classes/--input-size (or --config) to say otherwise", path.name,
                    " and ".join(assumed))
    base = like.replace(num_classes=n or 10, input_size=size or (32, 32), class_names=()) if like else None
    spec = base or ModelSpec(architecture=path.stem, num_classes=n or 10, input_size=size or (32, 32),
                             channels=channels, mean=(0.5,) * channels, std=(0.5,) * channels)
    spec = spec.replace(architecture=path.stem, build={})
    names_from_data = data_names if data_names and len(data_names) == spec.num_classes else None
    spec = apply_options(spec, opts.merged(class_names=names), path.name, recorded=False,
                         data_names=names_from_data)
    loaded = LoadedModel.from_file(path, spec)
    loaded.source_hash = sha256_file(path)
    if not opts.is_empty:
        loaded.info["options"] = opts.to_dict()
    return loaded


def onnx_shapes(path: Path) -> dict[str, Any]:
    """Static input (C, H, W) and output classes an ONNX graph declares; {} when dynamic or unreadable."""
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        dims_in = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
        dims_out = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    except Exception:  # noqa: BLE001 - a broken file fails later, in the runner, with its own message
        return {}
    out: dict[str, Any] = {}
    if len(dims_in) == 4 and all(dims_in[1:]):
        out.update(channels=dims_in[1], input_size=(dims_in[2], dims_in[3]))
    if len(dims_out) == 2 and dims_out[1]:
        out["num_classes"] = dims_out[1]
    return out


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

