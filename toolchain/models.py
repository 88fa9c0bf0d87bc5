"""Model registry: register_model / create_model / list_models, and the project's own CNNs.

Each registry entry builds an nn.Module for a class count and input size and says what
preprocessing it expects (a ModelSpec). Checkpoints store `spec.build` so they can rebuild
the exact architecture before loading weights.
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


# ---------------------------------------------------------------- the project's own CNNs


def _simple_cnn(num_classes: int, input_size: tuple[int, int], pretrained: bool, widths=(32, 64, 64), hidden=128):
    from torch import nn

    layers: list[nn.Module] = []
    in_ch = 3
    for width in widths:
        layers += [nn.Conv2d(in_ch, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        in_ch = width
    h, w = input_size[0] // 2 ** len(widths), input_size[1] // 2 ** len(widths)
    if h < 1 or w < 1:
        raise UserInputError(f"simple-cnn needs an input of at least {2 ** len(widths)} pixels, got {input_size}.")
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(in_ch * h * w, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(hidden, num_classes),
    )


register_model(
    "simple-cnn",
    description="Teaching CNN: conv 32-64-64 + max-pool, FC 128, dropout 0.5",
    family="cnn",
)(_simple_cnn)
register_model(
    "tiny-cnn",
    description="simple-cnn at widths 8-16-16, FC 32: for tests",
    family="cnn",
    kwargs={"widths": (8, 16, 16), "hidden": 32},
)(_simple_cnn)


def _basic_block(in_ch: int, out_ch: int, stride: int):
    """A residual block with two separate ReLU modules (torchao's x86 quantizer needs them apart)."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_ch)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_ch)
            self.relu2 = nn.ReLU()
            self.shortcut: nn.Module = nn.Identity()
            if stride != 1 or in_ch != out_ch:
                self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.relu1(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu2(out + self.shortcut(x))

    return BasicBlock()


def _resnet_cnn(
    num_classes: int,
    input_size: tuple[int, int],
    pretrained: bool,
    widths=(32, 64, 128, 256),
    blocks: int = 2,
    dropout: float = 0.2,
):
    from torch import nn

    if blocks < 2:
        raise UserInputError(f"resnet-cnn needs at least 2 blocks per stage, got {blocks}.")
    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    in_ch = widths[0]
    for stage, width in enumerate(widths):
        for i in range(blocks):
            layers.append(_basic_block(in_ch, width, 2 if (i == 0 and stage > 0) else 1))
            in_ch = width
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_ch, num_classes)
    )


register_model(
    "resnet-cnn",
    description="ResNet for small images: BatchNorm, 4 stages 32-256 x 2 residual blocks, GAP, dropout",
    family="resnet",
)(_resnet_cnn)
register_model(
    "tiny-resnet",
    description="resnet-cnn at widths 8-12-16-24: for tests",
    family="resnet",
    kwargs={"widths": (8, 12, 16, 24)},
)(_resnet_cnn)

# Importing these modules registers the pretrained-capable families (torchvision, ViT, EfficientNet).
from toolchain import zoo  # noqa: E402,F401
