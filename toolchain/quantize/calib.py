"""Calibration and held-out data for quantization: streamed, stratified, hashed, never overlapping.

Labeled sources (digits, ImageFolder, ...) calibrate on the train split and judge on the
validation split. ImageNet-class models without a data source calibrate on augmented crops of the
bundled photos with a different seed than the crops they are judged on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolchain.data import DataBundle, check_model_fits_data, photo_crops
from toolchain.errors import UserInputError
from toolchain.inputs import evaluation_inputs, resolve_bundle
from toolchain.models import LoadedModel
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)

PHOTO_EVAL_SEED = 0
PHOTO_CALIB_SEED = 1000  # calibration crops never reuse the evaluation crops' seed


@dataclass
class QuantData:
    """Where calibration batches come from, the held-out evaluation set, and their description."""

    spec: ModelSpec
    calibration: Callable[[], Iterator[np.ndarray]]
    eval_x: np.ndarray
    eval_labels: np.ndarray | None
    description: dict[str, Any] = field(default_factory=dict)
    bundle: DataBundle | None = None
    _batches: int | None = None

    @property
    def labeled(self) -> bool:
        return self.eval_labels is not None

    def batch_count(self) -> int:
        """How many calibration batches `calibration()` yields (counted once, without preprocessing twice)."""
        if self._batches is None:
            n = int(self.description.get("calibration", {}).get("n", 0))
            size = int(self.description.get("calibration", {}).get("batch_size", 0))
            self._batches = -(-n // size) if n and size else sum(1 for _ in self.calibration())
        return self._batches


class HashingBatches:
    """Iterate calibration batches once, checking their shape and hashing their bytes on the way."""

    def __init__(self, data: QuantData) -> None:
        self.data = data
        self.digest = hashlib.sha256()
        self.count = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        expected = (self.data.spec.channels, *self.data.spec.input_size)
        for batch in self.data.calibration():
            batch = np.ascontiguousarray(batch, dtype=np.float32)
            if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
                raise UserInputError(
                    f"calibration batch has shape {tuple(batch.shape)}; the model expects (N, "
                    f"{', '.join(map(str, expected))}). Use images for this model or set its input size."
                )
            if not len(batch):
                continue
            self.digest.update(batch.tobytes())
            self.count += len(batch)
            yield batch

    def finish(self) -> dict[str, Any]:
        if self.count == 0:
            raise UserInputError(
                "the calibration set is empty: no images came from --data; give a source with training images "
                "(or raise --samples)."
            )
        return {"images": self.count, "sha256": self.digest.hexdigest()}


def _array_batches(x: np.ndarray, batch_size: int) -> Callable[[], Iterator[np.ndarray]]:
    def gen() -> Iterator[np.ndarray]:
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size]

    return gen


def _photo_batches(spec: ModelSpec, samples: int, batch_size: int, seed: int) -> Callable[[], Iterator[np.ndarray]]:
    def gen() -> Iterator[np.ndarray]:
        for index, start in enumerate(range(0, samples, batch_size)):
            yield photo_crops(spec, min(batch_size, samples - start), seed=seed + index)

    return gen


def check_array(x: Any, spec: ModelSpec, what: str) -> np.ndarray:
    """A user-given array must be non-empty float NCHW of the model's input shape."""
    expected = (spec.channels, *spec.input_size)
    arr = np.asarray(x)
    if arr.ndim != 4 or tuple(arr.shape[1:]) != expected:
        raise UserInputError(
            f"{what} has shape {tuple(arr.shape)}; expected (N, {', '.join(map(str, expected))}) for "
            f"{spec.architecture}. Preprocess the images to the model's input size."
        )
    if len(arr) == 0:
        raise UserInputError(f"{what} is empty; give at least one image.")
    return arr.astype(np.float32)


def resolve_quant_data(
    model: LoadedModel,
    data: DataBundle | str | np.ndarray | None,
    samples: int,
    batch_size: int,
    eval_samples: int | None = None,
    seed: int = 0,
) -> QuantData:
    """Calibration (train split / photo crops seed 1000+) and held-out evaluation (val / seed 0) data."""
    spec = model.spec
    if isinstance(data, np.ndarray):
        x = check_array(data, spec, "calibration data")[:samples]
        ev = evaluation_inputs(model, None, limit=eval_samples)
        return QuantData(spec, _array_batches(x, batch_size), ev.x, ev.labels,
                         {"calibration": {"source": "array", "n": int(len(x)), "batch_size": batch_size},
                          "evaluation": ev.description})
    bundle = data if isinstance(data, DataBundle) else resolve_bundle(model, data)
    if bundle is not None:
        check_model_fits_data(spec, bundle)
        if not bundle.split.get("train"):
            raise UserInputError(
                f"the calibration set is empty: data '{bundle.samples.source}' has no training images; "
                "give a source with more images."
            )
        x, labels = bundle.arrays("val", limit=eval_samples)

        def gen() -> Iterator[np.ndarray]:
            for batch, _ in bundle.batches("train", batch_size, limit=samples, stratified=True):
                yield batch

        n_cal = min(samples, len(bundle.split["train"]))
        desc = {
            "calibration": {"source": bundle.samples.source, "part": "train", "n": n_cal, "stratified": True,
                            "batch_size": batch_size,
                            "data_sha256": bundle.samples.digest, "seed": bundle.config.seed},
            "evaluation": {"source": bundle.samples.source, "part": "val", "n": int(len(x)), "labeled": True},
        }
        return QuantData(spec, gen, x, labels, desc, bundle)
    if spec.num_classes == 1000:
        count = eval_samples or 200
        x = photo_crops(spec, count, seed=PHOTO_EVAL_SEED + seed)
        desc = {
            "calibration": {"source": "bundled-photos (scikit-image), augmented crops", "n": samples,
                            "batch_size": batch_size,
                            "seed": PHOTO_CALIB_SEED + seed},
            "evaluation": {"source": "bundled-photos (scikit-image), augmented crops", "n": count,
                           "seed": PHOTO_EVAL_SEED + seed, "labeled": False},
        }
        return QuantData(spec, _photo_batches(spec, samples, batch_size, PHOTO_CALIB_SEED + seed), x, None, desc)
    raise UserInputError(
        f"No calibration data is known for {model.name}: pass --data (digits, synthetic or an ImageFolder "
        "directory with the model's classes)."
    )
