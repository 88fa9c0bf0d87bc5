"""Data sources (digits, ImageFolder dir, synthetic, cifar10), stratified splits and loaders.

Images stay as PIL images (in-memory sources) or paths (folders) until a transform turns them
into tensors with the ModelSpec's preprocessing; augmentation is for training only.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.datasplit import (
    PARTS,
    SPLITS,
    append_holdout,
    check_split_config,
    describe_split,
    read_split_file,
    stratified_split,
)
from toolchain.errors import MissingDependencyError, UserInputError
from toolchain.images import verify_image
from toolchain.photos import bundled_photos, photo_crops  # noqa: F401 - re-exported: callers import them from here
from toolchain.preprocess import IMAGE_SUFFIXES, eval_transform, open_image, to_model_mode, train_transform
from toolchain.spec import ModelSpec
from toolchain.synthetic import SHAPES, generate_synthetic, synthetic_samples

log = logging.getLogger(__name__)

BUILTIN_SOURCES = ("digits", "synthetic", "cifar10")
__all__ = ["PARTS", "SHAPES", "SPLITS", "generate_synthetic", "stratified_split", "synthetic_samples"]  # re-exported


@dataclass
class DataConfig:
    """Where the images come from and how they are split (the seed makes the split reproducible)."""

    source: str = "digits"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    synthetic_classes: int = 4
    synthetic_per_class: int = 60
    synthetic_size: int = 32
    hflip: bool | None = None  # None: on, except for digits where a flip changes the class
    split_file: str | None = None  # the user's own split (JSON of paths relative to `source`), see datasplit
    test_data: str | None = None  # a separate holdout ImageFolder: the whole test split (test_fraction unused)

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise UserInputError(f"{name} must be in [0, 1), got {value}.")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise UserInputError("val_fraction + test_fraction must leave at least 10% for training.")
        if not 2 <= self.synthetic_classes <= len(SHAPES):
            raise UserInputError(f"synthetic classes must be 2..{len(SHAPES)}, got {self.synthetic_classes}.")
        if self.synthetic_per_class < 3:
            raise UserInputError(f"synthetic per-class count must be >= 3, got {self.synthetic_per_class}.")
        if self.source not in BUILTIN_SOURCES and not Path(self.source).exists():
            raise UserInputError(
                f"Unknown data source '{self.source}': expected {', '.join(BUILTIN_SOURCES)} or an ImageFolder "
                "directory (one sub-folder of images per class)."
            )
        for name in ("split_file", "test_data"):
            if getattr(self, name) is not None:
                setattr(self, name, str(getattr(self, name)))
        check_split_config(self.source, self.split_file, self.test_data)


@dataclass
class SampleSet:
    """All images of a source (PIL images or file paths) with integer labels and class names."""

    items: list[Any]
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    digest: str = ""

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = _digest(self.items, self.labels)

    def __len__(self) -> int:
        return len(self.items)

    def image(self, index: int) -> Any:
        item = self.items[index]
        return open_image(item) if isinstance(item, Path) else item


def _digest(items: list[Any], labels: np.ndarray) -> str:
    digest = hashlib.sha256(np.asarray(labels, dtype=np.int64).tobytes())
    for item in items:
        if isinstance(item, Path):
            digest.update(f"{item.parent.name}/{item.name}:{item.stat().st_size}".encode())
        else:
            digest.update(np.asarray(item).tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------ sources


def load_digits_samples() -> SampleSet:
    """scikit-learn's bundled 1,797 real 8x8 handwritten digits, as greyscale PIL images."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [Image.fromarray((img * (255.0 / 16.0)).clip(0, 255).astype(np.uint8), "L") for img in digits.images]
    return SampleSet(images, digits.target.astype(np.int64), tuple(str(i) for i in range(10)), "digits")


def image_folder_samples(folder: str | Path) -> SampleSet:
    """An ImageFolder directory: one sub-folder per class; every file must be a readable image."""
    root = Path(folder)
    if not root.is_dir():
        raise UserInputError(f"Data directory '{root}' does not exist.")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UserInputError(
            f"'{root}' has no class folders; expected ImageFolder layout: {root}/<class>/<image>.jpg, one sub-folder "
            "per class."
        )
    items: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
        for file in files:
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                raise UserInputError(
                    f"'{file}' is not an image file (expected {', '.join(IMAGE_SUFFIXES)}); "
                    "move it out of the class folder."
                )
            verify_image(file)
        if not files:
            raise UserInputError(f"Class folder '{class_dir}' has no images; add images or remove the folder.")
        items += files
        labels += [label] * len(files)
    if len(class_dirs) < 2:
        raise UserInputError(f"'{root}' has only one class folder ('{class_dirs[0].name}'); a classifier needs two.")
    return SampleSet(items, np.asarray(labels, dtype=np.int64), tuple(p.name for p in class_dirs), str(root))


def cifar10_samples(root: str | Path = "~/.cache/vtool/cifar10") -> SampleSet:
    """CIFAR-10 test+train via torchvision's downloader (online only)."""
    from torchvision.datasets import CIFAR10

    path = Path(root).expanduser()
    try:
        train = CIFAR10(str(path), train=True, download=True)
    except (OSError, RuntimeError) as exc:
        raise MissingDependencyError(
            f"Could not download CIFAR-10 ({type(exc).__name__}); this machine looks offline. "
            "Use --data digits, --data synthetic or an ImageFolder directory."
        ) from None
    from PIL import Image

    images = [Image.fromarray(arr) for arr in train.data]
    return SampleSet(images, np.asarray(train.targets, dtype=np.int64), tuple(train.classes), "cifar10")


def load_samples(config: DataConfig) -> SampleSet:
    if config.source == "digits":
        return load_digits_samples()
    if config.source == "synthetic":
        return synthetic_samples(config.synthetic_classes, config.synthetic_per_class, config.synthetic_size,
                                 config.seed)
    if config.source == "cifar10":
        return cifar10_samples()
    return image_folder_samples(config.source)


# ------------------------------------------------------------------ splits and loaders


class ImageDataset:
    """A torch-style dataset over a subset of a SampleSet with one transform."""

    def __init__(self, samples: SampleSet, indices: list[int], transform: Any, spec: ModelSpec) -> None:
        self.samples, self.indices, self.transform, self.spec = samples, list(indices), transform, spec

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        index = self.indices[i]
        image = to_model_mode(self.samples.image(index), self.spec)
        return self.transform(image), int(self.samples.labels[index])


@dataclass
class DataBundle:
    """A source split into train/val/test, preprocessed for one ModelSpec."""

    samples: SampleSet
    split: dict[str, list[int]]
    spec: ModelSpec
    config: DataConfig
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.samples.class_names

    @property
    def num_classes(self) -> int:
        return len(self.samples.class_names)

    def indices(self, part: str) -> list[int]:
        """The image indices of a split part; "all" is every image of the source."""
        if part == "all":
            return list(range(len(self.samples)))
        if part not in self.split:
            raise UserInputError(f"Unknown split '{part}': expected one of {', '.join([*self.split, 'all'])}.")
        return list(self.split[part])

    def dataset(self, part: str, augment: bool = False) -> ImageDataset:
        hflip = self.config.hflip if self.config.hflip is not None else self.config.source != "digits"
        transform = train_transform(self.spec, hflip=hflip) if augment else eval_transform(self.spec)
        return ImageDataset(self.samples, self.indices(part), transform, self.spec)

    def loader(self, part: str, batch_size: int = 64, shuffle: bool = False, augment: bool = False,
               seed: int | None = None, workers: int = 0, pin_memory: bool = False) -> Any:
        import torch

        from toolchain.loaders import loader_options

        generator = torch.Generator().manual_seed(self.config.seed if seed is None else seed)
        return torch.utils.data.DataLoader(self.dataset(part, augment), batch_size=batch_size, shuffle=shuffle,
                                           generator=generator, **loader_options(workers, pin_memory))

    def batches(self, part: str, batch_size: int = 64, limit: int | None = None,
                stratified: bool = False, workers: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream float32 NCHW numpy batches and labels (bounded memory: never the whole set)."""
        indices = self.subset(part, limit, stratified) if limit else self.indices(part)
        from toolchain.loaders import stream

        chunks = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
        for x, y in stream(self, chunks, workers=workers):
            yield x.numpy().astype(np.float32, copy=False), y.numpy()

    def arrays(self, part: str, limit: int | None = None, stratified: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The whole (optionally limited) split as arrays; for small evaluation sets (batches() streams)."""
        chunks = list(self.batches(part, 128, limit, stratified))
        if not chunks:
            raise UserInputError(f"The '{part}' split of {self.samples.source} is empty.")
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

    def subset(self, part: str, limit: int | None, stratified: bool = True) -> list[int]:
        """Up to `limit` indices of a split, round-robin over classes so every class is represented."""
        indices = self.indices(part)
        if limit is None or limit >= len(indices):
            return list(indices)
        if not stratified:
            return list(indices[:limit])
        rng = np.random.default_rng(self.config.seed)
        by_class = [rng.permutation([i for i in indices if self.samples.labels[i] == c]).tolist()
                    for c in range(self.num_classes)]
        chosen: list[int] = []
        while len(chosen) < limit:
            for group in by_class:
                if group and len(chosen) < limit:
                    chosen.append(group.pop())
        return sorted(chosen)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.samples.source,
            "num_images": len(self.samples),
            "classes": list(self.class_names),
            "sha256": self.samples.digest,
            "seed": self.config.seed,
            "split_sizes": {k: len(v) for k, v in self.split.items()},
            **describe_split(self.config.split_file, self.config.test_data),
        }


def load_data(
    spec: ModelSpec, config: DataConfig | None = None, split: dict[str, list[int]] | None = None
) -> DataBundle:
    """Load a source (plus a --test-data holdout), split it: the recorded `split` when given, else the split file,
    else vtool's seeded stratified split. A holdout folder is always the whole test split."""
    config = config or DataConfig()
    samples = load_samples(config)
    holdout: list[int] = []
    if config.test_data is not None:
        samples, holdout = append_holdout(samples, image_folder_samples(config.test_data))
    if split is not None:
        if max((max(v) for v in split.values() if v), default=-1) >= len(samples):
            raise UserInputError("The recorded split does not fit this data source; was the data changed?")
    elif config.split_file is not None:
        split = read_split_file(config.split_file, samples, config.source)
        if holdout and split["test"]:
            raise UserInputError(f"Split file '{config.split_file}' has a test part and --test-data was given too; "
                                 "keep one of them.")
    else:
        main = np.arange(len(samples) - len(holdout))
        fractions = (config.val_fraction, 0.0 if holdout else config.test_fraction)
        split = {k: main[v].tolist() for k, v in stratified_split(samples.labels[main], *fractions,
                                                                   config.seed).items()}
    if holdout:
        split = {**split, "test": holdout}
    return DataBundle(samples, split, spec, config)


def check_model_fits_data(spec: ModelSpec, bundle: DataBundle) -> None:
    """A model trained on N classes cannot be scored against data with M != N classes."""
    if spec.num_classes != bundle.num_classes:
        raise UserInputError(
            f"Model '{spec.architecture}' predicts {spec.num_classes} classes but data '{bundle.samples.source}' has "
            f"{bundle.num_classes} ({', '.join(bundle.class_names[:5])}...). Use data with the model's classes or "
            "train/fine-tune on this data first."
        )
