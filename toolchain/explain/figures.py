"""Explanation figures (matplotlib, Agg): one image's overlay titled with its top-k, and the worst explanation
parity pairs side by side (image | reference heatmap | candidate heatmap)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolchain.report.plots import pyplot, save_figure
from toolchain.spec import ModelSpec


def to_display(x: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """A preprocessed CHW image back to displayable HxW (grey) or HxWx3 in [0, 1] (undo the normalization)."""
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    image = np.clip(x * std + mean, 0.0, 1.0)
    return image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))


def _show(ax: Any, image: np.ndarray, heat: np.ndarray | None = None, alpha: float = 0.5) -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    if heat is not None:
        ax.imshow(heat, cmap="jet", alpha=alpha, vmin=0, vmax=1, interpolation="bilinear")
    ax.axis("off")


def overlay_figure(image: np.ndarray, item: Any, dest: str | Path) -> Path:
    """Image | heatmap over the image, titled with the top-k answer and the class explained."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(6.4, 3.6))
    _show(left, image)
    left.set_title("input (as the model sees it)", fontsize=8)
    _show(right, image, item.heatmap)
    right.set_title(f"{item.method}: evidence for '{item.target_label}'", fontsize=8)
    top = "   ".join(f"{i + 1}. {t['label'][:22]} {t['confidence']:.1%}" for i, t in enumerate(item.top))
    fig.suptitle(f"{Path(item.image).name}\n{top}", fontsize=9)
    return save_figure(fig, dest)


def pairs_figure(pairs: list[dict[str, Any]], reference: str, candidate: str, dest: str | Path,
                 method: str = "occlusion") -> Path:
    """One row per pair (worst first): image | reference heatmap | candidate heatmap, with Spearman and IoU."""
    plt = pyplot()
    rows = max(1, len(pairs))
    fig, axes = plt.subplots(rows, 3, figsize=(6.6, 2.3 * rows), squeeze=False)
    for row, pair in zip(axes, pairs, strict=False):
        _show(row[0], pair["image"])
        row[0].set_title(f"#{pair['index']} class '{pair['target_label'][:18]}'", fontsize=8)
        _show(row[1], pair["image"], pair["ref_map"])
        row[1].set_title(f"{reference[:22]}", fontsize=8)
        _show(row[2], pair["image"], pair["cand_map"])
        row[2].set_title(f"{candidate[:22]}\nSpearman {pair['spearman']:.2f}  IoU {pair['iou']:.2f}", fontsize=8)
    if not pairs:
        for ax in axes.ravel():
            ax.axis("off")
    fig.suptitle(f"explanation parity ({method}): worst pairs", fontsize=9)
    return save_figure(fig, dest)
