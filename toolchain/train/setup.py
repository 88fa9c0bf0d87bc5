"""Preparing a run: output-dir checks, resume, model + data with matching classes, head freezing."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.data import DataBundle, DataConfig, load_data
from toolchain.errors import UserInputError
from toolchain.models import LoadedModel
from toolchain.models.checkpoint import CHECKPOINT_NAME, read_checkpoint
from toolchain.models.config import ModelOptions
from toolchain.outputs import check_destination, check_writable
from toolchain.sources import load_model
from toolchain.train.config import LAST_NAME, TrainConfig


def is_run_dir(path: str | Path) -> bool:
    folder = Path(path)
    return folder.is_dir() and any((folder / name).exists() for name in (CHECKPOINT_NAME, LAST_NAME, "history.json"))


def check_out_dir(out_dir: str | Path, resume: bool, overwrite: bool, sources: tuple[Any, ...] = ()) -> None:
    """Refuse to train into a directory holding a run unless resuming or overwriting, into anything that is not a
    run (a folder of other files), or into the run being trained from (outputs.check_destination)."""
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"--out '{folder}' is a file; expected a directory for the run.")
    if resume:
        if not (folder / LAST_NAME).is_file():
            raise UserInputError(f"Cannot resume: '{folder / LAST_NAME}' does not exist; train without --resume.")
        check_writable(folder)
        return
    if is_run_dir(folder) and not overwrite:
        raise UserInputError(
            f"'{folder}' already holds a training run; pass --resume to continue it, --overwrite to replace it, "
            "or pick another --out."
        )
    check_destination(folder, sources=sources, overwrite=overwrite, replaceable=is_run_dir, kind="a training run")


def recorded_run(out_dir: str | Path) -> dict[str, Any]:
    """The last.pt payload of a run (config, data_config, split, epoch...)."""
    file = Path(out_dir) / LAST_NAME
    if not file.is_file():
        raise UserInputError(f"Cannot resume: '{file}' does not exist; train without --resume.")
    return read_checkpoint(file)


def resume_config(out_dir: str | Path, **overrides: Any) -> TrainConfig:
    """The run's recorded TrainConfig with the given non-None overrides (e.g. more epochs), resume on."""
    recorded = dict(recorded_run(out_dir).get("config") or {})
    known = {k: v for k, v in recorded.items() if k in TrainConfig.__dataclass_fields__}
    known.update({k: v for k, v in overrides.items() if v is not None})
    known["resume"] = True
    known["overwrite"] = False
    return TrainConfig(**known)


def prepare_training(
    source: str | None,
    data_config: DataConfig | None,
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    weights: str | None = None,
    num_classes: int | None = None,
    input_size: tuple[int, int] | None = None,
    pretrained: bool | None = None,
    options: ModelOptions | None = None,
) -> tuple[LoadedModel, DataBundle]:
    """Load (or, with config.resume, reload from out_dir) the model and its data, class counts matched.

    `options` are the shared model flags (--config, --mean, --labels...; the keyword arguments override them).
    The data decides the class count of a new head; --labels renames the data's classes (same count)."""
    import torch

    torch.manual_seed(config.seed)
    if config.resume:
        if out_dir is None:
            raise UserInputError("--resume needs --out pointing at the run to continue.")
        payload = recorded_run(out_dir)
        last = str(Path(out_dir) / LAST_NAME)
        # a run of a user's class resumes only with that class named again (--model file.py:Class): vtool never
        # imports code a checkpoint names
        loaded = load_model(source, weights=last) if source and ".py:" in source else load_model(last)
        recorded = payload.get("data_config")
        if not recorded:
            raise UserInputError(f"'{out_dir}/{LAST_NAME}' records no data config; cannot resume it.")
        bundle = load_data(loaded.spec, DataConfig(**recorded), split=payload.get("split"))
        loaded.info["pretrained_start"] = payload.get("pretrained")
        return loaded, bundle
    if source is None:
        raise UserInputError("--model is required (a registry name, checkpoint, run dir or file.py:Class).")
    data_config = data_config or DataConfig()
    opts = (options or ModelOptions()).merged(weights=weights, num_classes=num_classes, input_size=input_size,
                                              pretrained=pretrained)
    if opts.input_size is not None and min(opts.input_size) < 8:
        raise UserInputError(f"--input-size must be at least 8x8, got {opts.input_size}.")
    from toolchain.models import is_registered
    from toolchain.spec import ModelSpec

    placeholder = ModelSpec(architecture="pending", num_classes=1, input_size=opts.input_size or (32, 32))
    bundle = load_data(placeholder, data_config)
    if opts.num_classes is not None and opts.num_classes != bundle.num_classes:
        raise UserInputError(
            f"--num-classes {opts.num_classes} does not match data '{bundle.samples.source}', which has "
            f"{bundle.num_classes} classes; leave --num-classes out when training (the data decides)."
        )
    names = opts.class_names or bundle.class_names
    if len(names) != bundle.num_classes:
        raise UserInputError(f"--labels has {len(names)} class names but data '{bundle.samples.source}' has "
                             f"{bundle.num_classes} classes ({', '.join(bundle.class_names[:6])}); give one name per "
                             "class folder, in sorted folder order.")
    if is_registered(source) or ".py:" in source:  # a new head, built for the data's classes
        loaded = load_model(source, options=opts.merged(num_classes=bundle.num_classes, class_names=names))
    else:
        loaded = load_model(source, options=opts)
        if not loaded.is_torch:
            raise UserInputError(f"'{source}' is an exported {loaded.origin} model; training needs an eager "
                                 "PyTorch model (a registry name, checkpoint, run dir, file.py:Class or HF dir).")
    if loaded.spec.num_classes != bundle.num_classes:
        raise UserInputError(
            f"Model '{source}' predicts {loaded.spec.num_classes} classes but data '{bundle.samples.source}' has "
            f"{bundle.num_classes}; start from a registry name (a new head is built for the data) or use data "
            "with the model's classes."
        )
    loaded.spec = loaded.spec.replace(class_names=names)
    if names != bundle.class_names:  # --labels: readable names for the class folders, recorded everywhere
        bundle = dataclasses.replace(bundle, samples=dataclasses.replace(bundle.samples, class_names=tuple(names)))
    return loaded, dataclasses.replace(bundle, spec=loaded.spec)


def run_record(loaded: LoadedModel) -> dict[str, Any]:
    """What a run records about its start in every checkpoint: `pretrained` (the starting weights were pretrained
    or loaded, not random; None when unknown) and the model options given (--config, --mean, --labels...)."""
    info = loaded.info or {}
    start = info.get("pretrained_start", info.get("pretrained"))
    record: dict[str, Any] = {"pretrained": None if start is None else bool(start)}
    if info.get("options"):
        record["options"] = info["options"]
    return record


# ------------------------------------------------------------------ model helpers


def find_head(module: Any) -> Any:
    """The classification head: HF `classifier`, timm `get_classifier()`, torchvision `fc`/`classifier`,
    else the last Linear layer (the project's Sequential models)."""
    from torch import nn

    inner = getattr(module, "model", None)
    if inner is not None and isinstance(getattr(inner, "classifier", None), nn.Module):
        return inner.classifier
    if hasattr(module, "get_classifier"):
        head = module.get_classifier()
        if isinstance(head, nn.Module):
            return head
    for name in ("fc", "classifier", "head"):
        head = getattr(module, name, None)
        if isinstance(head, nn.Module):
            return head
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserInputError("--freeze-backbone: found no classifier head (fc / classifier / a final Linear layer).")
    return linears[-1]


def freeze_backbone(module: Any) -> Any:
    """Only the head trains (feature extraction); returns the head."""
    head = find_head(module)
    for param in module.parameters():
        param.requires_grad_(False)
    for param in head.parameters():
        param.requires_grad_(True)
    return head


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """'balanced' weights (sklearn) for classes present in training; 1.0 for absent ones."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = np.ones(num_classes, dtype=np.float32)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from toolchain.errors import MissingDependencyError

        raise MissingDependencyError("--device cuda was requested but no CUDA GPU is available here; use --device cpu.")
    return device


def evaluate_loss(module: Any, loader: Any, criterion: Any, device: str) -> tuple[float, float, int]:
    import torch

    module.eval()
    total_loss, correct, count = 0.0, 0, 0
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = module(x).float()
            total_loss += float(criterion(logits, y)) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
    if count == 0:
        return float("nan"), float("nan"), 0
    return total_loss / count, correct / count, count
