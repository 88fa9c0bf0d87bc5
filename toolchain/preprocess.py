"""Image preprocessing from a ModelSpec: the same resize/crop/normalize in every stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolchain.images import open_image, to_8bit
from toolchain.spec import ModelSpec

__all__ = ["IMAGE_SUFFIXES", "eval_transform", "list_image_files", "open_image", "preprocess", "to_model_mode",
           "train_transform"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def _interpolation(name: str) -> Any:
    from torchvision.transforms import InterpolationMode

    return {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR,
            "bicubic": InterpolationMode.BICUBIC}[name]


def eval_transform(spec: ModelSpec) -> Any:
    """Resize to size/crop_pct, center crop, scale to [0,1], normalize (timm's eval recipe)."""
    import torch
    from torchvision.transforms import v2

    height, width = spec.input_size
    resize = (int(round(height / spec.crop_pct)), int(round(width / spec.crop_pct)))
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize, interpolation=_interpolation(spec.interpolation), antialias=True),
        v2.CenterCrop((height, width)),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(spec.mean, spec.std),
    ])


def train_transform(spec: ModelSpec, hflip: bool = True, strength: float = 1.0) -> Any:
    """Training-only augmentation: random resized crop, flip, small rotation, colour jitter."""
    import torch
    from torchvision.transforms import v2

    steps: list[Any] = [
        v2.ToImage(),
        v2.RandomResizedCrop(spec.input_size, scale=(1 - 0.3 * strength, 1.0), ratio=(0.85, 1.18),
                             interpolation=_interpolation(spec.interpolation), antialias=True),
        v2.RandomRotation(10 * strength),
        v2.ColorJitter(0.2 * strength, 0.2 * strength, 0.2 * strength),
    ]
    if hflip:
        steps.insert(2, v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)]
    return v2.Compose(steps)


def to_model_mode(image: Any, spec: ModelSpec) -> Any:
    """Convert a PIL image to the colour mode the model reads (RGB, or L): deep images scaled to 8 bits,
    transparency put on white (see toolchain.images)."""
    mode = "L" if spec.channels == 1 else "RGB"
    if image.mode == mode:
        return image
    image = to_8bit(image)
    if image.mode in ("RGBA", "LA"):
        from PIL import Image

        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert(mode)
    return image.convert(mode)


def preprocess(images: list[Any], spec: ModelSpec) -> np.ndarray:
    """PIL images -> a float32 NCHW batch ready for any Runner."""
    transform = eval_transform(spec)
    return np.stack([transform(to_model_mode(img, spec)).numpy() for img in images]).astype(np.float32)


def list_image_files(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
