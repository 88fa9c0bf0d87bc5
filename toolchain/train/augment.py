"""Fast training input: preprocessed tensors cached once, augmented a whole batch at a time.

Per-image PIL/torchvision augmentation costs ~10 ms an image on this 2-core CPU, more than the
forward and backward pass of a small CNN. When a split fits in memory, training instead caches
its eval-preprocessed tensors once and augments each batch with one affine warp (random resized
crop + rotation + optional flip) and a colour jitter, the same recipe as preprocess.train_transform.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

CACHE_LIMIT_BYTES = 512 * 1024 * 1024


def cached_split(bundle: Any, part: str, limit_bytes: int = CACHE_LIMIT_BYTES) -> tuple[Any, Any] | None:
    """(x, y) tensors of a split, preprocessed for evaluation; None when the split is too big to cache."""
    import torch

    indices = bundle.split.get(part, [])
    if not indices:
        return None
    channels, (height, width) = bundle.spec.channels, bundle.spec.input_size
    if len(indices) * channels * height * width * 4 > limit_bytes:
        log.info("%s split (%d images) is too large to cache; augmenting image by image", part, len(indices))
        return None
    x, y = bundle.arrays(part, stratified=False)
    return torch.from_numpy(x), torch.from_numpy(y.astype("int64"))


def batches(x: Any, y: Any, batch_size: int, shuffle: bool = False) -> Iterator[tuple[Any, Any]]:
    """Mini-batches of cached tensors (shuffled with torch's global generator when asked)."""
    import torch

    order = torch.randperm(len(y)) if shuffle else torch.arange(len(y))
    for start in range(0, len(y), batch_size):
        index = order[start:start + batch_size]
        yield x[index], y[index]


def augment_batch(x: Any, mean: tuple[float, ...], std: tuple[float, ...], hflip: bool = True,
                  strength: float = 1.0) -> Any:
    """Random resized crop (area 0.7-1, ratio 0.85-1.18), rotation +-10 deg, flip, colour jitter 0.2.

    `x` is a normalized NCHW float batch; the result is normalized the same way.
    """
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    area = torch.empty(n).uniform_(1 - 0.3 * strength, 1.0)
    log_ratio = torch.empty(n).uniform_(math.log(0.85), math.log(1.18))
    ratio = torch.exp(log_ratio)
    scale_x = torch.sqrt(area * ratio).clamp(max=1.0)
    scale_y = torch.sqrt(area / ratio).clamp(max=1.0)
    shift_x = (torch.rand(n) * 2 - 1) * (1 - scale_x)
    shift_y = (torch.rand(n) * 2 - 1) * (1 - scale_y)
    angle = (torch.rand(n) * 2 - 1) * math.radians(10 * strength)
    flip = torch.where(torch.rand(n) < 0.5, -1.0, 1.0) if hflip else torch.ones(n)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([
        torch.stack([scale_x * cos * flip, -scale_y * sin, shift_x], dim=1),
        torch.stack([scale_x * sin * flip, scale_y * cos, shift_y], dim=1),
    ], dim=1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return _colour_jitter(warped, mean, std, 0.2 * strength)


def _colour_jitter(x: Any, mean: tuple[float, ...], std: tuple[float, ...], amount: float) -> Any:
    """Brightness, contrast and (for RGB) saturation factors in [1 - amount, 1 + amount] per image."""
    import torch

    n, channels = x.shape[0], x.shape[1]
    m = torch.tensor(mean, dtype=x.dtype).view(1, channels, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, channels, 1, 1)
    pixels = x * s + m

    def factor() -> Any:
        return torch.empty(n, 1, 1, 1).uniform_(1 - amount, 1 + amount).to(x.dtype)

    pixels = (pixels * factor()).clamp(0, 1)
    grey = _grey(pixels)
    pixels = ((pixels - grey.mean(dim=(2, 3), keepdim=True)) * factor() + grey.mean(dim=(2, 3), keepdim=True))
    pixels = pixels.clamp(0, 1)
    if channels == 3:
        grey = _grey(pixels)
        pixels = (grey + (pixels - grey) * factor()).clamp(0, 1)
    return (pixels - m) / s


def _grey(pixels: Any) -> Any:
    if pixels.shape[1] == 1:
        return pixels
    weights = pixels.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (pixels * weights).sum(dim=1, keepdim=True)
