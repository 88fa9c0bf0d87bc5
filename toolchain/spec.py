"""ModelSpec: the preprocessing and label metadata every artifact carries (like timm's PretrainedCfg)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from toolchain.errors import UserInputError, check_choice

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects as input and what its outputs mean; travels in checkpoints and manifests."""

    architecture: str
    num_classes: int
    input_size: tuple[int, int] = (32, 32)
    channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    class_names: tuple[str, ...] = field(default_factory=tuple)
    # how the model was built, so a checkpoint can rebuild it: registry kwargs, hf config, user file
    build: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if self.num_classes < 1:
            raise UserInputError(f"num_classes must be >= 1, got {self.num_classes}.")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise UserInputError(f"input_size must be (height, width) > 0, got {self.input_size}.")
        if self.channels not in (1, 3):
            raise UserInputError(f"channels must be 1 or 3, got {self.channels}.")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise UserInputError(f"mean/std need {self.channels} values, got {self.mean} / {self.std}.")
        check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        if not 0.0 < self.crop_pct <= 1.0:
            raise UserInputError(f"crop_pct must be in (0, 1], got {self.crop_pct}.")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise UserInputError(
                f"{len(self.class_names)} class names given for a model with {self.num_classes} classes."
            )

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names, or the class indices as strings when none are known."""
        return self.class_names or tuple(str(i) for i in range(self.num_classes))

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.channels, *self.input_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def replace(self, **changes: Any) -> ModelSpec:
        return ModelSpec.from_dict({**self.to_dict(), **changes})
