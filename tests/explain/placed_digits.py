"""Digits placed at random spots on a larger black canvas: a model must find the digit, so a heatmap that
highlights it is measurably better than chance (the digit's box covers about a quarter of the image)."""

from __future__ import annotations

import numpy as np

CANVAS = 32
DIGIT = 16


def placed_digits(count: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x NCHW normalized with mean/std 0.5, labels, boxes (top, left, bottom, right) of the digit's ink)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    images, labels = digits.images / 16.0, digits.target
    if count is not None:
        images, labels = images[:count], labels[:count]
    x = np.zeros((len(images), 3, CANVAS, CANVAS), dtype=np.float32)
    boxes = np.zeros((len(images), 4), dtype=np.int64)
    for i, image in enumerate(images):
        big = np.kron(image, np.ones((DIGIT // 8, DIGIT // 8)))
        top, left = rng.integers(0, CANVAS - DIGIT + 1, size=2)
        x[i, :, top:top + DIGIT, left:left + DIGIT] = big
        rows, cols = np.nonzero(big > 0)
        boxes[i] = (top + rows.min(), left + cols.min(), top + rows.max() + 1, left + cols.max() + 1)
    return (x - 0.5) / 0.5, labels.astype(np.int64), boxes


def train_placed(arch: str = "simple-cnn", epochs: int = 6, seed: int = 0):
    """A LoadedModel trained on placed digits (train part: all but the last 300 images), and the held-out part."""
    import torch

    from toolchain.models import LoadedModel, create_model

    torch.manual_seed(seed)
    x, y, boxes = placed_digits(seed=seed)
    module, spec = create_model(arch, num_classes=10)
    spec = spec.replace(class_names=tuple(str(i) for i in range(10)))
    xt, yt = torch.from_numpy(x[:-300]), torch.from_numpy(y[:-300])
    optimizer = torch.optim.Adam(module.parameters(), lr=2e-3)
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), 64):
            idx = order[start:start + 64]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(xt[idx]), yt[idx]).backward()
            optimizer.step()
    module.eval()
    return LoadedModel(spec, f"registry:{arch}", module=module), (x[-300:], y[-300:], boxes[-300:])


def mass_in_box(maps: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: share of the heatmap's mass inside the digit's box, and the box's share of the image (chance)."""
    inside, chance = [], []
    for heat, (top, left, bottom, right) in zip(maps, boxes, strict=True):
        total = float(heat.sum()) or 1.0
        inside.append(float(heat[top:bottom, left:right].sum()) / total)
        chance.append((bottom - top) * (right - left) / heat.size)
    return np.asarray(inside), np.asarray(chance)
