"""Matplotlib figures (Agg backend, PNG): training curves, confusion matrix, misclassified images, bench
latency/throughput, the pipeline's latency-vs-accuracy scatter.

Each figure function writes one PNG atomically (temp file + rename) and returns its path.
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
    """Save a figure as PNG through a uniquely named temp file and rename (never a half-written plot)."""
    import io

    from toolchain.outputs import atomic_write_bytes

    plt = pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


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


# ------------------------------------------------------------------ bench plots


def plot_latency_vs_batch(ax: Any, entries: list[dict[str, Any]]) -> None:
    """p50 latency (ms, log scale) against batch size, one line per (model, runner) at concurrency 1."""
    series: dict[str, list[tuple[int, float]]] = {}
    for e in entries:
        if int(e.get("concurrency", 1)) == 1:
            point = (int(e["batch_size"]), float(e["latency_ms"]["p50"]))
            series.setdefault(f"{e['model']} / {e['runner']}", []).append(point)
    for label, points in series.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    batches = sorted({p[0] for points in series.values() for p in points})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    if batches:
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(batches[0] / 1.5, batches[-1] * 1.5)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 latency per batch (ms)")
    ax.set_title("Latency vs batch size")
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.15), ncols=2, frameon=False)


def plot_throughput_bars(ax: Any, entries: list[dict[str, Any]]) -> None:
    """Horizontal throughput bars (images/s), fastest at the top."""
    from toolchain.bench.result import entry_label

    ordered = sorted(entries, key=lambda e: e["throughput_ips"])
    labels = [entry_label(e) for e in ordered]
    ax.barh(range(len(ordered)), [e["throughput_ips"] for e in ordered], color="tab:blue")
    ax.set_yticks(range(len(ordered)), labels, fontsize=7)
    ax.set_xlabel("throughput (images/s)")
    ax.set_title("Throughput")
    ax.grid(True, axis="x", alpha=0.3)


def bench_plot(result: dict[str, Any], path: str | Path) -> Path:
    """Write a PNG with latency vs batch size (per runner) and throughput bars."""
    from toolchain.report.bench import env_line

    plt = pyplot()
    entries = result["entries"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, max(4.5, 0.28 * len(entries) + 2.0)), layout="constrained")
    plot_latency_vs_batch(left, entries)
    plot_throughput_bars(right, entries)
    fig.suptitle(env_line(result.get("env", {})), fontsize=8)
    return save_figure(fig, path)


def latency_accuracy_plot(rows: list[dict[str, Any]], batch: int, path: Path) -> Path | None:
    """Each artifact as a point: p50 latency at `batch` against accuracy (or agreement)."""
    points = [(r[f"p50_b{batch}_ms"], r["accuracy"] if r["accuracy"] is not None else r["agreement"],
               f"{r['artifact']} / {r['runner']}") for r in rows]
    points = [p for p in points if p[0] is not None and p[1] is not None]
    if not points:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for latency, acc, label in points:
        ax.scatter(latency, acc, s=40)
        ax.annotate(label, (latency, acc), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency at batch {batch} (ms, log scale)")
    ax.set_ylabel("top-1 accuracy" if rows and rows[0]["accuracy"] is not None else "top-1 agreement")
    ax.set_title("latency vs accuracy")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
