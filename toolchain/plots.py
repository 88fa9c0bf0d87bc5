"""Matplotlib figures (Agg backend, PNG): training curves, confusion matrix, misclassified images.

Each function writes one PNG atomically (temp file + rename) and returns its path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend (plots are files, never windows)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a figure as PNG through a temp file and rename (never a half-written plot)."""
    plt = pyplot()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp{target.suffix}")
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return target


def training_curves(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Loss and accuracy per epoch (train and validation) side by side."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, [row[f"train_{key}"] for row in history], marker="o", markersize=3, label="train")
        ax.plot(epochs, [row[f"val_{key}"] for row in history], marker="o", markersize=3, label="val")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path,
                     title: str = "confusion matrix") -> Path:
    """Counts with true classes as rows and predictions as columns (annotated up to 20 classes)."""
    plt = pyplot()
    cm = np.asarray(matrix, dtype=np.int64)
    n = len(class_names)
    side = min(max(4.0, 0.5 * n + 2), 16.0)
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    labels = [str(name)[:18] for name in class_names]
    ax.set_xticks(range(n), labels=labels, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center")
    ax.set_yticks(range(n), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > threshold else "black")
    return save_figure(fig, path)


def misclassified_grid(images: Sequence[Any], true_labels: Sequence[str], pred_labels: Sequence[str],
                       path: str | Path, columns: int = 6, title: str = "misclassified") -> Path:
    """A grid of images (PIL or HxW[xC] arrays) titled 'true -> pred'; an empty set gives a note."""
    plt = pyplot()
    count = len(images)
    if count == 0:
        fig, ax = plt.subplots(figsize=(4, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        return save_figure(fig, path)
    cols = min(columns, count)
    rows = (count + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, true, pred in zip(axes.ravel(), images, true_labels, pred_labels, strict=False):
        array = np.asarray(image)
        ax.imshow(array, cmap="gray" if array.ndim == 2 else None, interpolation="nearest")
        ax.set_title(f"true {str(true)[:12]}\npred {str(pred)[:12]}", fontsize=8, color="crimson")
    fig.suptitle(title)
    return save_figure(fig, path)
