"""Preprocessing throughput: decode + resize + crop + normalize images/s, PIL vs torchvision v2, on real JPEGs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

from toolchain.errors import MissingDependencyError, UserInputError, check_choice
from toolchain.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

log = logging.getLogger(__name__)

PIPELINES = ("pil", "torchvision-v2", "tv-decode-v2")
DEFAULT_SPEC = ModelSpec(architecture="imagenet-224", num_classes=1000, input_size=(224, 224), mean=IMAGENET_MEAN,
                         std=IMAGENET_STD, interpolation="bilinear", crop_pct=0.875)


def save_photos(folder: str | Path, quality: int = 90) -> list[Path]:
    """Write the bundled real photos (scikit-image) as JPEG files; returns their paths."""
    from toolchain.data import bundled_photos

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in bundled_photos():
        path = root / f"{name}.jpg"
        image.save(path, "JPEG", quality=quality)
        paths.append(path)
    if not paths:
        raise MissingDependencyError("No bundled photos are available (scikit-image is missing).")
    return paths


def _pil_pipeline(spec: ModelSpec) -> Callable[[Path], np.ndarray]:
    """Pure PIL + numpy: decode, resize to size/crop_pct, center crop, scale, normalize, HWC -> CHW."""
    from PIL import Image

    from toolchain.preprocess import to_model_mode

    resample = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                "bicubic": Image.Resampling.BICUBIC}[spec.interpolation]
    height, width = spec.input_size
    rh, rw = int(round(height / spec.crop_pct)), int(round(width / spec.crop_pct))
    top, left = (rh - height) // 2, (rw - width) // 2
    mean = np.asarray(spec.mean, dtype=np.float32) * 255
    inv_std = 1 / (np.asarray(spec.std, dtype=np.float32) * 255)

    def run(path: Path) -> np.ndarray:
        with Image.open(path) as img:
            img = to_model_mode(img, spec).resize((rw, rh), resample, reducing_gap=None)
        img = img.crop((left, top, left + width, top + height))
        array = np.asarray(img, dtype=np.float32).reshape(height, width, spec.channels)
        return np.ascontiguousarray(((array - mean) * inv_std).transpose(2, 0, 1))

    return run


def _torchvision_pipeline(spec: ModelSpec) -> Callable[[Path], np.ndarray]:
    """What vtool itself uses: PIL decode (open_image) + the torchvision v2 eval transform."""
    from toolchain.preprocess import eval_transform, open_image, to_model_mode

    transform = eval_transform(spec)
    return lambda path: transform(to_model_mode(open_image(path), spec)).numpy()


def _tv_decode_pipeline(spec: ModelSpec) -> Callable[[Path], np.ndarray]:
    """torchvision.io decode straight to a uint8 tensor, then the same v2 eval transform."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    from toolchain.preprocess import eval_transform

    transform = eval_transform(spec)
    mode = ImageReadMode.GRAY if spec.channels == 1 else ImageReadMode.RGB
    return lambda path: transform(decode_image(read_file(str(path)), mode=mode)).numpy()


BUILDERS = {"pil": _pil_pipeline, "torchvision-v2": _torchvision_pipeline, "tv-decode-v2": _tv_decode_pipeline}


def preprocess_throughput(paths: list[Path], spec: ModelSpec | None = None, pipelines: list[str] | None = None,
                          duration_s: float = 2.0, min_rounds: int = 2, threads: int = 1) -> list[dict[str, Any]]:
    """Images/s of each pipeline, cycling over `paths` for `duration_s` (at least `min_rounds` passes).

    torch runs with `threads` intra-op threads meanwhile (default 1, like a DataLoader worker): on a
    busy machine 2 threads made the torchvision pipelines ~10x slower than on 1.
    """
    import torch

    if threads < 1:
        raise UserInputError(f"--threads must be >= 1, got {threads}.")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _measure_pipelines(paths, spec, pipelines, duration_s, min_rounds, threads)
    finally:
        torch.set_num_threads(before)


def _measure_pipelines(paths: list[Path], spec: ModelSpec | None, pipelines: list[str] | None, duration_s: float,
                       min_rounds: int, threads: int) -> list[dict[str, Any]]:
    if not paths:
        raise UserInputError("No images to preprocess; pass image files or use the bundled photos.")
    if duration_s <= 0 or min_rounds < 1:
        raise UserInputError(f"Preprocessing needs duration > 0 and rounds >= 1, got {duration_s} / {min_rounds}.")
    spec = spec or DEFAULT_SPEC
    rows = []
    for name in pipelines or list(PIPELINES):
        check_choice("preprocessing pipeline", name, PIPELINES)
        run = BUILDERS[name](spec)
        out = run(paths[0])  # first call: lazy imports and caches, not timed
        times: list[float] = []
        deadline = perf_counter() + duration_s
        while len(times) < min_rounds * len(paths) or perf_counter() < deadline:
            path = paths[len(times) % len(paths)]
            start = perf_counter()
            run(path)
            times.append(perf_counter() - start)
        ms = np.asarray(times) * 1e3
        rows.append({"pipeline": name, "images": len(times), "unique_images": len(paths),
                     "images_per_s": round(len(times) / float(np.sum(times)), 2),
                     "ms_per_image": {"mean": round(float(ms.mean()), 3), "p50": round(float(np.median(ms)), 3),
                                      "p90": round(float(np.percentile(ms, 90)), 3)},
                     "output_shape": list(out.shape), "input_size": list(spec.input_size), "threads": threads})
        log.debug("preprocess %s: %.1f images/s", name, rows[-1]["images_per_s"])
    return rows
