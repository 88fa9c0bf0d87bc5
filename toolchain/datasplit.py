"""Splits: vtool's seeded stratified split, the user's own split file, and a separate holdout folder.

- `stratified_split`: per-class shuffled train/val/test fractions (seeded, reproducible).
- `--split-file split.json`: `{"train": [...], "val": [...], "test": [...]}`, image paths relative to the
  --data folder (`cat/001.jpg`); every path must exist and belong to one part only. Images listed in no part
  are left out. This is how a model trained in the user's own script is scored on what it never saw.
- `--test-data DIR`: a separate holdout ImageFolder; its images are appended to the data and form the whole
  test split (their class folders are matched to the data's classes by name).

The split a model was trained with is recorded in its checkpoint and artifacts (image indices), and later
stages reuse it (inputs.resolve_bundle).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolchain.errors import UserInputError, did_you_mean

if TYPE_CHECKING:
    from toolchain.data import SampleSet

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PARTS = (*SPLITS, "all")  # what a stage may score: one part of the split, or every image of the source


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Per-class shuffled split, so every class appears in val and test where it has enough images."""
    rng = np.random.default_rng(seed)
    split: dict[str, list[int]] = {name: [] for name in SPLITS}
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction)) if test_fraction else 0
        n_val = int(round(len(idx) * val_fraction)) if val_fraction else 0
        if len(idx) >= 3:
            n_test, n_val = max(n_test, 1 if test_fraction else 0), max(n_val, 1 if val_fraction else 0)
        split["test"] += idx[:n_test].tolist()
        split["val"] += idx[n_test:n_test + n_val].tolist()
        split["train"] += idx[n_test + n_val:].tolist()
    return {name: sorted(v) for name, v in split.items()}


def check_split_config(source: str, split_file: str | None, test_data: str | None) -> None:
    """DataConfig's cheap checks (files exist, the source is a folder); the contents are checked at load."""
    if split_file is not None:
        if not Path(split_file).is_file():
            raise UserInputError(f"Split file '{split_file}' does not exist; expected JSON with train/val/test lists.")
        if not Path(source).is_dir():
            raise UserInputError(f"--split-file lists image paths inside an ImageFolder; --data '{source}' is not a "
                                 "directory.")
    if test_data is not None and not Path(test_data).is_dir():
        raise UserInputError(f"--test-data '{test_data}' is not a directory; expected an ImageFolder (one sub-folder "
                             "per class).")


def read_split_file(path: str | Path, samples: SampleSet, root: str | Path) -> dict[str, list[int]]:
    """The user's split as indices into `samples` (an ImageFolder under `root`); every problem is one line."""
    file, base = Path(path), Path(root)
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"Split file '{file}' is not readable JSON ({exc}).") from None
    if not isinstance(raw, dict) or not raw:
        raise UserInputError(f"Split file '{file}' must be a JSON object like {{\"train\": [...], \"val\": [...], "
                             "\"test\": [...]}.")
    for key, value in raw.items():
        if key not in SPLITS:
            raise UserInputError(f"Split file '{file}' has an unknown part '{key}': expected train, val and test."
                                 f"{did_you_mean(key, SPLITS)}")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserInputError(f"Split file '{file}': '{key}' must be a list of image paths (strings).")
    index = {_relative(item, base): i for i, item in enumerate(samples.items)}
    split: dict[str, list[int]] = {name: [] for name in SPLITS}
    owner: dict[str, str] = {}
    missing: list[str] = []
    for part in SPLITS:
        for entry in raw.get(part, []):
            rel = _normalise(entry, base)
            if rel in owner:
                where = "twice in" if owner[rel] == part else f"in both {owner[rel]} and"
                raise UserInputError(f"Split file '{file}' lists '{entry}' {where} {part}; every image belongs to "
                                     "one part.")
            owner[rel] = part
            if rel not in index:
                missing.append(entry)
                continue
            split[part].append(index[rel])
    if missing:
        raise UserInputError(f"Split file '{file}' names {len(missing)} image(s) that are not under '{base}' "
                             f"(first: '{missing[0]}'); paths are relative to the --data folder, e.g. "
                             f"'{_relative(samples.items[0], base)}'.")
    if not split["train"] and not split["val"] and not split["test"]:
        raise UserInputError(f"Split file '{file}' lists no images.")
    unused = len(samples) - sum(len(v) for v in split.values())
    if unused:
        log.info("split file %s: %d image(s) of %s are in no part and are not used", file, unused, base)
    return {name: sorted(v) for name, v in split.items()}


def _relative(item: Any, base: Path) -> str:
    path = Path(item)
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _normalise(entry: str, base: Path) -> str:
    path = Path(entry.replace("\\", "/"))
    if path.is_absolute():
        try:
            return path.relative_to(base.resolve()).as_posix()
        except ValueError:
            return _relative(path, base)
    parts = [p for p in path.parts if p not in ("", ".")]
    return Path(*parts).as_posix() if parts else ""


def append_holdout(samples: SampleSet, holdout: SampleSet) -> tuple[SampleSet, list[int]]:
    """`samples` with the holdout's images appended (labels matched by class name) and their indices."""
    names = list(samples.class_names)
    unknown = [n for n in holdout.class_names if n not in names]
    if unknown:
        raise UserInputError(f"--test-data '{holdout.source}' has class folder(s) {', '.join(unknown[:4])} that "
                             f"--data has not ({', '.join(names[:6])}...); name the holdout's folders like the data's.")
    mapping = np.asarray([names.index(n) for n in holdout.class_names], dtype=np.int64)
    start = len(samples)
    merged = type(samples)(list(samples.items) + list(holdout.items),
                           np.concatenate([samples.labels, mapping[holdout.labels]]), samples.class_names,
                           samples.source)
    return merged, list(range(start, start + len(holdout)))


def describe_split(split_file: str | None, test_data: str | None) -> dict[str, Any]:
    """How the split was made, for manifests and result JSON."""
    if split_file:
        from toolchain.artifact import sha256_file

        return {"split_by": "split file", "split_file": str(split_file), "split_file_sha256": sha256_file(split_file),
                **({"test_data": str(test_data)} if test_data else {})}
    if test_data:
        return {"split_by": "seeded stratified split + holdout folder", "test_data": str(test_data)}
    return {"split_by": "seeded stratified split"}
