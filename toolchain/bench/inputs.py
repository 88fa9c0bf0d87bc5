"""Benchmark inputs: real preprocessed images tiled to each batch size, synthetic noise as a noted fallback."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from toolchain.errors import UserInputError, VtoolError
from toolchain.models import LoadedModel

log = logging.getLogger(__name__)

MAX_REAL_IMAGES = 64


def synthetic_images(model: LoadedModel, count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(model.spec.input_shape(count), dtype=np.float32)


def real_images(model: LoadedModel, count: int, data: str | None) -> tuple[np.ndarray, str]:
    """Up to `count` real images: the model's data split (or `data`), else crops of the bundled photos."""
    from toolchain.inputs import evaluation_inputs

    try:
        found = evaluation_inputs(model, data=data, limit=count, photos=count)
        return found.x, str(found.description.get("source", "data"))
    except VtoolError as exc:
        if data is not None:
            raise
        log.debug("no recorded data for %s (%s); trying the bundled photos", model.name, exc)
    if model.spec.channels != 3:
        raise UserInputError(f"No real images known for {model.name}; pass --data or --inputs synthetic.")
    from toolchain.data import photo_crops

    return photo_crops(model.spec, count), "bundled-photos (scikit-image)"


def bench_inputs(model: LoadedModel, max_batch: int, mode: str = "auto", data: str | None = None,
                 seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """A pool of preprocessed float32 NCHW images for `model` and a description of where they came from."""
    count = max(1, min(max_batch, MAX_REAL_IMAGES))
    if mode != "synthetic":
        try:
            x, source = real_images(model, count, data)
            if len(x):
                return x.astype(np.float32), {"source": source, "real": True, "unique_images": int(len(x))}
        except VtoolError as exc:
            if mode == "real":
                raise
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. photos that don't fit a 1-channel model: fall back
            if mode == "real":
                raise UserInputError(f"Could not prepare real images for {model.name}: {exc}") from None
            reason = f"{type(exc).__name__}: {exc}"
        log.info("%s: no real images (%s); using synthetic random input", model.name, reason[:160])
    x = synthetic_images(model, count, seed)
    note = "synthetic random input (no real images found)" if mode == "auto" else "synthetic random input"
    return x, {"source": "synthetic", "real": False, "unique_images": count, "note": note}


def tile_batch(pool: np.ndarray, batch_size: int) -> np.ndarray:
    """A C-contiguous batch of `batch_size` images cycling through `pool`."""
    reps = -(-batch_size // len(pool))
    return np.ascontiguousarray(np.concatenate([pool] * reps)[:batch_size], dtype=np.float32)
