"""Calibration and judging data for quantization: streamed, hashed, and never from the same source images.

Data as users have it:
- labelled data with the model's classes (digits, an ImageFolder, a run's recorded data): calibrate
  on the train split, judge top-1 drop and agreement on the validation split;
- labelled data with OTHER classes (resnet18 with `--data synthetic`): calibration needs no labels, so
  calibrate on the train split and judge by agreement with fp32 on the validation split;
- a flat folder of unlabelled images, or an `.npy` array (N,C,H,W float, preprocessed): split by
  file/row into disjoint calibration and judging parts (judging gets ~30%, at least one);
- nothing, for an ImageNet-class model: crops of the bundled photos, calibration group vs evaluation
  group (different source images, toolchain/photos.py).
A warning says when fewer than MIN_JUDGE images judge the budget: one flip then moves agreement by
more than half a point.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.data import DataBundle, DataConfig, load_data
from toolchain.errors import UserInputError
from toolchain.inputs import data_config_of, resolve_bundle
from toolchain.models import LoadedModel
from toolchain.photos import crop_sources, photo_crops
from toolchain.photos import describe as describe_photos
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)

PHOTO_EVAL_SEED = 0
PHOTO_CALIB_SEED = 1000
JUDGE_FRACTION = 0.3
MIN_JUDGE = 200


@dataclass
class QuantData:
    """Where calibration batches come from, the judging set, and their description."""

    spec: ModelSpec
    calibration: Callable[[], Iterator[np.ndarray]]
    eval_x: np.ndarray
    eval_labels: np.ndarray | None
    description: dict[str, Any] = field(default_factory=dict)
    bundle: DataBundle | None = None  # labelled training data (QAT), when the classes fit
    _batches: int | None = None
    sources: Callable[[], np.ndarray] | None = None  # source image of each calibration image; None: its own

    def source_ids(self, count: int) -> np.ndarray:
        """Which source image each of the first `count` calibration images is a crop of (held-out splits)."""
        return self.sources()[:count] if self.sources is not None else np.arange(count)

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
            yield photo_crops(spec, min(batch_size, samples - start), seed=seed + index, group="calibration")

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


def judge_split(keys: list[str]) -> tuple[list[int], list[int]]:
    """Indices (calibration, judging) split by a stable hash of each key: ~30% judge, at least one of each."""
    if len(keys) < 2:
        raise UserInputError(
            f"{len(keys)} image(s) cannot both calibrate and judge INT8 (they must be different images); give at least "
            "2, ideally hundreds."
        )
    order = sorted(range(len(keys)), key=lambda i: hashlib.sha1(keys[i].encode()).hexdigest())
    judge = max(1, min(len(keys) - 1, round(len(keys) * JUDGE_FRACTION)))
    return sorted(order[judge:]), sorted(order[:judge])


def flat_images(folder: Path) -> list[Path] | None:
    """The image files directly inside `folder` when it is a flat folder (no class sub-folders), else None."""
    from toolchain.preprocess import IMAGE_SUFFIXES

    subdirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if subdirs and not files:
        return None
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        what = f"only non-image files ({', '.join(p.name for p in files[:3])})" if files else "no files"
        raise UserInputError(
            f"'{folder}' holds {what}; calibration needs images ({', '.join(IMAGE_SUFFIXES)}) directly inside it "
            "or an ImageFolder layout (one sub-folder per class)."
        )
    return images


def _preprocess(files: list[Path], spec: ModelSpec) -> np.ndarray:
    from toolchain.preprocess import eval_transform, open_image, to_model_mode

    transform = eval_transform(spec)
    return np.stack([transform(to_model_mode(open_image(f), spec)).numpy() for f in files]).astype(np.float32)


def _from_rows(x: np.ndarray, keys: list[str], spec: ModelSpec, samples: int, batch_size: int, eval_samples: int | None,
               source: str) -> QuantData:
    calib, judge = judge_split(keys)
    calib, judge = calib[:samples], judge[:eval_samples] if eval_samples else judge
    desc = {"calibration": {"source": source, "n": len(calib), "batch_size": batch_size},
            "evaluation": {"source": source, "n": len(judge), "labeled": False,
                           "disjoint": "different files/rows than calibration"}}
    return QuantData(spec, _array_batches(x[calib], batch_size), x[judge], None, desc)


def _flat_folder(folder: Path, files: list[Path], spec: ModelSpec, samples: int, batch_size: int,
                 eval_samples: int | None) -> QuantData:
    calib, judge = judge_split([f.name for f in files])
    calib, judge = calib[:samples], judge[:eval_samples] if eval_samples else judge
    calib_files, judge_files = [files[i] for i in calib], [files[i] for i in judge]

    def gen() -> Iterator[np.ndarray]:
        for start in range(0, len(calib_files), batch_size):
            yield _preprocess(calib_files[start:start + batch_size], spec)

    source = f"{folder} (flat folder, unlabelled)"
    desc = {"calibration": {"source": source, "n": len(calib_files), "batch_size": batch_size},
            "evaluation": {"source": source, "n": len(judge_files), "labeled": False,
                           "disjoint": "different files than calibration"}}
    return QuantData(spec, gen, _preprocess(judge_files, spec), None, desc)


def _array_source(data: np.ndarray | str, spec: ModelSpec, samples: int, batch_size: int,
                  eval_samples: int | None) -> QuantData:
    if isinstance(data, str):
        try:
            array = np.load(data, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserInputError(f"'{data}' is not a readable .npy array ({str(exc)[:120]}); save one with "
                                 "numpy.save(path, images) (N, C, H, W float32, preprocessed).") from None
        source = f"{data} (.npy)"
    else:
        array, source = data, "array"
    x = check_array(array, spec, "calibration data")
    return _from_rows(x, [f"row-{i}" for i in range(len(x))], spec, samples, batch_size, eval_samples, source)


def _bundle_source(bundle: DataBundle, spec: ModelSpec, samples: int, batch_size: int,
                   eval_samples: int | None) -> QuantData:
    if not bundle.split.get("train"):
        raise UserInputError(f"the calibration set is empty: data '{bundle.samples.source}' has no training images; "
                             "give a source with more images.")
    fits = bundle.num_classes == spec.num_classes
    if not fits:
        log.info("data '%s' has %d classes, the model %d: calibrating on its images and judging by agreement with "
                 "fp32 (labels unused)", bundle.samples.source, bundle.num_classes, spec.num_classes)
    x, labels = bundle.arrays("val", limit=eval_samples)

    def gen() -> Iterator[np.ndarray]:
        for batch, _ in bundle.batches("train", batch_size, limit=samples, stratified=True):
            yield batch

    desc = {"calibration": {"source": bundle.samples.source, "part": "train", "n": min(samples,
                                                                                        len(bundle.split["train"])),
                            "stratified": True, "batch_size": batch_size, "data_sha256": bundle.samples.digest,
                            "seed": bundle.config.seed},
            "evaluation": {"source": bundle.samples.source, "part": "val", "n": int(len(x)), "labeled": fits,
                           "disjoint": "validation images (never calibrated on)"}}
    return QuantData(spec, gen, x, labels if fits else None, desc, bundle if fits else None)


def _photos(spec: ModelSpec, samples: int, batch_size: int, eval_samples: int | None, seed: int) -> QuantData:
    count = eval_samples or 300
    x = photo_crops(spec, count, seed=PHOTO_EVAL_SEED + seed, group="evaluation")
    desc = {"calibration": {**describe_photos("calibration", samples, PHOTO_CALIB_SEED + seed),
                            "batch_size": batch_size},
            "evaluation": {**describe_photos("evaluation", count, PHOTO_EVAL_SEED + seed), "labeled": False,
                           "disjoint": "different source photos than calibration"}}
    photos = desc["calibration"]["photos"]

    def sources() -> np.ndarray:  # one photo_crops call per batch
        return np.concatenate([crop_sources(min(batch_size, samples - start), photos)
                               for start in range(0, samples, batch_size)])

    return QuantData(spec, _photo_batches(spec, samples, batch_size, PHOTO_CALIB_SEED + seed), x, None, desc,
                     sources=sources)


def resolve_quant_data(model: LoadedModel, data: DataBundle | str | np.ndarray | None, samples: int, batch_size: int,
                       eval_samples: int | None = None, seed: int = 0) -> QuantData:
    """Calibration and judging data for `model` from any source in the module docstring."""
    spec = model.spec
    if isinstance(data, np.ndarray) or (isinstance(data, str) and data.lower().endswith(".npy")):
        qdata = _array_source(data, spec, samples, batch_size, eval_samples)
    elif isinstance(data, str) and Path(data).is_dir() and (files := flat_images(Path(data))) is not None:
        qdata = _flat_folder(Path(data), files, spec, samples, batch_size, eval_samples)
    else:
        bundle = data if isinstance(data, DataBundle) else _bundle(model, data)
        if bundle is not None:
            qdata = _bundle_source(bundle, spec, samples, batch_size, eval_samples)
        elif spec.num_classes == 1000:
            qdata = _photos(spec, samples, batch_size, eval_samples, seed)
        else:
            raise UserInputError(
                f"No calibration data is known for {model.name}: pass --data (digits, synthetic, an ImageFolder or a "
                "flat folder of images, or an .npy array)."
            )
    judged = len(qdata.eval_x)
    if judged < MIN_JUDGE:
        log.warning("only %d images judge the INT8 budget (one flip moves agreement by %.1f points); give more "
                    "held-out images for a firmer verdict", judged, 100.0 / max(judged, 1))
    return qdata


def _bundle(model: LoadedModel, data: str | None) -> DataBundle | None:
    """The named data (the recorded split when it names the model's own data), classes not required to match."""
    recorded = data_config_of(model)
    if data is None:
        return resolve_bundle(model, None)
    config = recorded if recorded is not None and recorded.source == data else DataConfig(source=data)
    return load_data(model.spec, config)
