"""The seeded synthetic shapes dataset (coloured shapes on noisy backgrounds): in memory, or written as an
ImageFolder by `vtool data generate`. Anyone can regenerate it exactly from its seed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from toolchain.data import SampleSet

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "bar", "dots")


def _draw_shape(draw: Any, shape: str, box: tuple[float, float, float, float], color: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    width = max(1, int(r / 3))
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=color)
    elif shape == "cross":
        draw.line([(x0, cy), (x1, cy)], fill=color, width=width)
        draw.line([(cx, y0), (cx, y1)], fill=color, width=width)
    elif shape == "ring":
        draw.ellipse(box, outline=color, width=width)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=color)
    elif shape == "bar":
        draw.rectangle((x0, cy - r / 4, x1, cy + r / 4), fill=color)
    else:  # dots
        for dx in (-r / 2, r / 2):
            for dy in (-r / 2, r / 2):
                draw.ellipse((cx + dx - r / 4, cy + dy - r / 4, cx + dx + r / 4, cy + dy + r / 4), fill=color)


def synthetic_samples(classes: int = 4, per_class: int = 60, size: int = 32, seed: int = 0) -> SampleSet:
    """Seeded coloured shapes on noisy backgrounds: a dataset anyone can regenerate exactly."""
    from PIL import Image, ImageDraw

    from toolchain.data import SampleSet

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(classes):
        for _ in range(per_class):
            background = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
            img = Image.fromarray(background, "RGB")
            r = rng.uniform(0.22, 0.4) * size
            cx, cy = rng.uniform(r, size - r, size=2)
            color = tuple(int(c) for c in rng.integers(120, 256, size=3))
            _draw_shape(ImageDraw.Draw(img), SHAPES[label], (cx - r, cy - r, cx + r, cy + r), color)
            images.append(img)
            labels.append(label)
    return SampleSet(images, np.asarray(labels, dtype=np.int64), SHAPES[:classes], f"synthetic-{classes}x{per_class}")


def generate_synthetic(out_dir: str | Path, classes: int = 4, per_class: int = 60, size: int = 32,
                       seed: int = 0, overwrite: bool = False) -> Path:
    """Write the synthetic set as an ImageFolder (PNG) so other tools can read it too. It is built beside
    `out_dir` and renamed into place; an existing generated folder is replaced only with `overwrite`."""
    from toolchain.outputs import atomic_dir, check_destination, destination_lock

    root = Path(out_dir)
    check_destination(root, overwrite=overwrite, replaceable=_is_image_folder, kind="a folder of generated images",
                      flag="OUT")
    samples = synthetic_samples(classes, per_class, size, seed)
    with destination_lock(root), atomic_dir(root, overwrite=overwrite) as tmp:
        for index, (img, label) in enumerate(zip(samples.items, samples.labels, strict=True)):
            folder = tmp / samples.class_names[label]
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{index:05d}.png")
    return root


def _is_image_folder(root: Path) -> bool:
    """Class sub-folders holding image files and nothing else: what `data generate` may replace."""
    from toolchain.preprocess import IMAGE_SUFFIXES

    return all(p.is_dir() and all(f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir())
               for p in root.iterdir())
