"""predict(): top-k labels with softmax confidence for image files, through any model's Runner."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserInputError
from toolchain.models import LoadedModel
from toolchain.preprocess import list_image_files, open_image, preprocess

log = logging.getLogger(__name__)


@dataclass
class PredictConfig:
    """How many labels to return per image and which backend runs the model."""

    top_k: int = 3
    runner: str = "auto"
    device: str = "cpu"
    threads: int | None = None
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise UserInputError(f"--top-k must be >= 1, got {self.top_k}.")
        if self.batch_size < 1:
            raise UserInputError(f"--batch-size must be >= 1, got {self.batch_size}.")


@dataclass
class Prediction:
    """One image's top-k classes: [{"label", "index", "confidence"}], best first."""

    image: str
    top: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.top[0]["label"]

    @property
    def confidence(self) -> float:
        return self.top[0]["confidence"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def collect_images(images: list[str | Path] | None = None, folder: str | Path | None = None) -> list[Path]:
    """The --image files plus every image under --dir; at least one, each an existing file."""
    paths = [Path(p) for p in images or []]
    if folder is not None:
        root = Path(folder)
        if not root.is_dir():
            raise UserInputError(f"--dir '{root}' is not a directory.")
        found = list_image_files(root)
        if not found:
            raise UserInputError(f"--dir '{root}' holds no image files (.jpg, .png, ...).")
        paths += found
    if not paths:
        raise UserInputError("No images given: pass --image FILE (repeatable) or --dir FOLDER.")
    for path in paths:
        if not path.is_file():
            raise UserInputError(f"Image '{path}' does not exist.")
    return paths


def predict(model: LoadedModel, images: list[str | Path], config: PredictConfig | None = None) -> list[Prediction]:
    """Decode every image first (a bad file fails before any inference), then run them in batches."""
    from toolchain.runners import get_runner

    config = config or PredictConfig()
    paths = [Path(p) for p in images]
    if not paths:
        raise UserInputError("No images to predict.")
    decoded = [open_image(path) for path in paths]
    labels = model.spec.labels
    k = min(config.top_k, model.spec.num_classes)
    results: list[Prediction] = []
    with get_runner(config.runner, model, device=config.device, threads=config.threads) as runner:
        for start in range(0, len(decoded), config.batch_size):
            batch = preprocess(decoded[start:start + config.batch_size], model.spec)
            probs = softmax(runner.infer_batched(batch, config.batch_size))
            for offset, row in enumerate(probs):
                order = np.argsort(-row)[:k]
                top = [{"label": labels[i] if i < len(labels) else str(i), "index": int(i),
                        "confidence": float(row[i])} for i in order]
                results.append(Prediction(str(paths[start + offset]), top))
    for pred in results:
        log.debug("%s -> %s (%.3f)", pred.image, pred.label, pred.confidence)
    return results
