"""Model registry (a leaf: imports nothing else of vtool's models): register_model / create_model / list_models.

Each registry entry builds an nn.Module for a class count and input size and says what
preprocessing it expects (a ModelSpec). Checkpoints store `spec.build` so they can rebuild
the exact architecture before loading weights. The entries themselves live in cnn.py, zoo.py
and hf.py; importing `toolchain.models` registers them all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from toolchain.errors import UserInputError, did_you_mean
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)

# factory(num_classes, input_size, pretrained, **kwargs) -> nn.Module
Factory = Callable[..., Any]


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture and the preprocessing its weights expect."""

    name: str
    factory: Factory
    description: str
    family: str
    input_size: tuple[int, int] = (32, 32)
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    pretrained_source: str = "none"
    default_num_classes: int = 10
    class_names_fn: Callable[[], tuple[str, ...]] | None = None
    pretrained_by_default: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)
    # parameters at the entry's defaults (default class count and input size): stated at registration, so
    # `vtool models` lists the registry without building any network (tests check each against a built one)
    params: int | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, **entry_fields: Any) -> Callable[[Factory], Factory]:
    """Decorator registering a factory under `name`; a duplicate name is a programming error."""

    def decorator(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"A model named '{name}' is already registered.")
        _REGISTRY[name] = ModelEntry(name=name, factory=factory, **entry_fields)
        return factory

    return decorator


def list_models() -> list[ModelEntry]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise UserInputError(
            f"Unknown model '{name}': expected a registry name ({', '.join(sorted(_REGISTRY))}), "
            f"a checkpoint, an artifact dir, a model file or path/to/file.py:ClassName."
            f"{did_you_mean(name, list(_REGISTRY))} Run `vtool models` to list them."
        )
    return _REGISTRY[name]


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def create_model(
    name: str,
    num_classes: int | None = None,
    input_size: tuple[int, int] | None = None,
    pretrained: bool | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
    **kwargs: Any,
) -> tuple[Any, ModelSpec]:
    """Build a registry model and its ModelSpec (new head when num_classes differs from pretrained)."""
    entry = get_entry(name)
    if pretrained is None:
        pretrained = entry.pretrained_by_default
    if pretrained and entry.pretrained_source == "none":
        raise UserInputError(f"Model '{name}' has no pretrained weights; drop --pretrained or pick another.")
    names = tuple(class_names or ())
    if num_classes is None:
        num_classes = len(names) if names else entry.default_num_classes
    if not names and num_classes == entry.default_num_classes and entry.class_names_fn and pretrained:
        names = entry.class_names_fn()
    size = tuple(input_size or entry.input_size)
    all_kwargs = {**entry.kwargs, **kwargs}
    module = entry.factory(num_classes=num_classes, input_size=size, pretrained=pretrained, **all_kwargs)
    spec = ModelSpec(
        architecture=name,
        num_classes=num_classes,
        input_size=size,
        channels=3,
        mean=entry.mean,
        std=entry.std,
        interpolation=entry.interpolation,
        crop_pct=entry.crop_pct,
        class_names=names,
        build={"kind": "registry", "name": name, "kwargs": all_kwargs},
    )
    return module, spec


def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())
