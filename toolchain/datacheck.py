"""`vtool data check`: data hygiene before training. Exact duplicates (sha256 of the decoded pixels) and near
duplicates (perceptual hashes: dHash and pHash, 64 bits each), within and across train/val/test; class balance;
corrupt or odd files (unreadable, truncated, tiny, unusual colour modes); size and mode statistics.

Splits: a folder with train/ val/ test/ sub-folders (each in ImageFolder layout) is checked as the user split it;
any other ImageFolder (or digits / synthetic) is split the way `vtool train` would split it (same seed).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserInputError

log = logging.getLogger(__name__)

USER_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
NORMAL_MODES = ("RGB", "L")


@dataclass
class CheckConfig:
    """Thresholds of `vtool data check`. `near` is the largest Hamming distance (of 64 bits) at which BOTH dHash
    and pHash call two images near duplicates; `min_side` flags tiny images."""

    near: int = 5
    min_side: int = 16
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    max_listed: int = 50  # groups listed in the table (the JSON keeps all)
    strict: bool = False  # the result fails (exit 3) on a duplicate across splits or an unreadable file

    def __post_init__(self) -> None:
        if not 0 <= self.near <= 32:
            raise UserInputError(f"--near must be 0..32 bits (of 64), got {self.near}.")
        if self.min_side < 1:
            raise UserInputError(f"--min-side must be >= 1 pixel, got {self.min_side}.")


@dataclass
class Item:
    """One image: where it is, its split and class, what it decoded to (or why it did not)."""

    name: str
    split: str
    label: str
    size: tuple[int, int] | None = None
    mode: str = ""
    problem: str = ""
    sha: str = ""
    dhash: int = 0
    phash: int = 0


@dataclass
class CheckResult:
    source: str
    layout: str  # "user splits" or "vtool split (seed N)"
    items: list[Item]
    exact: list[list[int]] = field(default_factory=list)  # groups of item indices
    near: list[list[int]] = field(default_factory=list)
    strict: bool = False

    def __bool__(self) -> bool:
        return not (self.strict and self.failures)

    @property
    def failures(self) -> list[str]:
        out = [f"{n} {kind} duplicate group(s) across splits" for kind, n in self.leaks.items() if n]
        unreadable = sum(1 for it in self.items if not it.sha)
        return out + ([f"{unreadable} unreadable file(s)"] if unreadable else [])

    def message(self) -> str:
        return f"data check of {self.source} failed: {'; '.join(self.failures)}." if self.failures else "clean"

    def group(self, indices: list[int]) -> dict[str, Any]:
        members = [{"file": self.items[i].name, "split": self.items[i].split, "class": self.items[i].label}
                   for i in indices]
        return {"members": members, "cross_split": len({m["split"] for m in members}) > 1,
                "label_conflict": len({m["class"] for m in members}) > 1}

    @property
    def leaks(self) -> dict[str, int]:
        """Duplicate groups that span two or more splits (leakage), per kind."""
        return {kind: sum(1 for g in groups if self.group(g)["cross_split"]) for kind, groups
                in (("exact", self.exact), ("near", self.near))}

    def stats(self) -> dict[str, Any]:
        good = [it for it in self.items if it.size]
        sides = np.asarray([it.size for it in good]) if good else np.zeros((0, 2))
        per_split: dict[str, Counter] = {}
        for it in self.items:
            per_split.setdefault(it.split, Counter())[it.label] += 1
        classes = Counter(it.label for it in self.items)
        return {
            "images": len(self.items), "decoded": len(good), "classes": dict(sorted(classes.items())),
            "per_split": {s: dict(sorted(c.items())) for s, c in per_split.items()},
            "imbalance": round(max(classes.values()) / max(1, min(classes.values())), 3) if classes else None,
            "modes": dict(Counter(it.mode for it in good)),
            "sizes": dict(Counter(f"{w}x{h}" for w, h in (it.size for it in good)).most_common(10)),
            "width": _spread(sides[:, 0]), "height": _spread(sides[:, 1]),
        }

    def problems(self) -> list[dict[str, str]]:
        return [{"file": it.name, "split": it.split, "problem": it.problem} for it in self.items if it.problem]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "layout": self.layout, "stats": self.stats(), "leaks": self.leaks,
                "exact_duplicates": [self.group(g) for g in self.exact],
                "near_duplicates": [self.group(g) for g in self.near], "problems": self.problems()}


def _spread(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    return {"min": int(values.min()), "median": float(np.median(values)), "max": int(values.max())}


# ------------------------------------------------------------------ hashes


def pixel_hash(image: Any) -> str:
    """sha256 of the decoded pixels (mode, size, bytes): the same picture saved as PNG and BMP matches."""
    digest = hashlib.sha256(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def _grey(image: Any, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(image.convert("L").resize(size, Image.Resampling.LANCZOS), dtype=np.float64)


def _bits(mask: np.ndarray) -> int:
    return int("".join("1" if b else "0" for b in mask.ravel()), 2)


def dhash(image: Any) -> int:
    """Difference hash: is each pixel brighter than its right neighbour, on a 9x8 greyscale thumbnail."""
    small = _grey(image, (9, 8))
    return _bits(small[:, 1:] > small[:, :-1])


def phash(image: Any) -> int:
    """Perceptual hash: the 8x8 lowest frequencies of a 32x32 DCT, above or below their median (DC excluded)."""
    from scipy.fft import dctn

    low = dctn(_grey(image, (32, 32)), norm="ortho")[:8, :8].ravel()
    return _bits(low > np.median(low[1:]))


def hamming(hashes: np.ndarray, other: int) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(hashes, np.uint64(other)))


# ------------------------------------------------------------------ collecting


def collect(source: str, config: CheckConfig) -> tuple[list[tuple[str, str, str, Any]], str]:
    """(name, split, class, path-or-PIL) for every image, and how it was split."""
    root = Path(source)
    if root.is_dir():
        splits = {p: USER_SPLITS[p.name.lower()] for p in root.iterdir() if p.is_dir()
                  and p.name.lower() in USER_SPLITS}
        if splits:
            entries = []
            for folder, split in sorted(splits.items()):
                for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                    entries += [(str(f.relative_to(root)), split, class_dir.name, f)
                                for f in sorted(class_dir.rglob("*")) if f.is_file() and not f.name.startswith(".")]
            if not entries:
                raise UserInputError(f"'{root}' has split folders ({', '.join(p.name for p in splits)}) but no images "
                                     "in <split>/<class>/ folders.")
            return entries, "user splits"
        return _vtool_split(_folder_items(root), root, config)
    if source in ("digits", "synthetic"):
        from toolchain.data import DataConfig, load_samples

        samples = load_samples(DataConfig(source=source, seed=config.seed))
        items = [(f"{source}[{i}]", samples.class_names[samples.labels[i]], img) for i, img in enumerate(samples.items)]
        return _vtool_split(items, root, config)
    raise UserInputError(f"Data '{source}' is not a directory: expected an ImageFolder dir (one sub-folder per class, "
                         "or train/ val/ test/ folders holding those), digits or synthetic.")


def _folder_items(root: Path) -> list[tuple[str, str, Path]]:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UserInputError(f"'{root}' has no class folders; expected {root}/<class>/<image> or "
                             f"{root}/train/<class>/<image>.")
    return [(str(f.relative_to(root)), d.name, f) for d in class_dirs for f in sorted(d.rglob("*"))
            if f.is_file() and not f.name.startswith(".")]


def _vtool_split(items: list[tuple[str, str, Any]], root: Path, config: CheckConfig):
    from toolchain.data import stratified_split

    classes = sorted({label for _, label, _ in items})
    labels = np.asarray([classes.index(label) for _, label, _ in items])
    split = stratified_split(labels, config.val_fraction, config.test_fraction, config.seed)
    part = {i: name for name, indices in split.items() for i in indices}
    return [(n, part[i], label, obj) for i, (n, label, obj) in enumerate(items)], f"vtool split (seed {config.seed})"


def inspect(name: str, split: str, label: str, obj: Any, config: CheckConfig) -> Item:
    """Decode one image (vtool's own decoder: preprocess.open_image) and hash it; a failure becomes a problem."""
    from toolchain.preprocess import IMAGE_SUFFIXES, open_image

    item = Item(name, split, label)
    if isinstance(obj, Path) and obj.suffix.lower() not in IMAGE_SUFFIXES:
        item.problem = f"not an image file ({obj.suffix or 'no suffix'})"
        return item
    try:
        image = open_image(obj) if isinstance(obj, Path) else obj
    except UserInputError as exc:
        item.problem = "truncated" if "truncated" in str(exc) else "unreadable: " + str(exc).split("(", 1)[-1][:80]
        return item
    item.size, item.mode = image.size, image.mode
    notes = []
    if min(image.size) < config.min_side:
        notes.append(f"tiny ({image.size[0]}x{image.size[1]})")
    if image.mode not in NORMAL_MODES:
        notes.append(f"mode {image.mode}")
    item.problem = ", ".join(notes)
    item.sha, item.dhash, item.phash = pixel_hash(image), dhash(image), phash(image)
    return item


def _groups(pairs: list[tuple[int, int]], n: int) -> list[list[int]]:
    """Connected components of the pair graph (union-find), each sorted, largest first."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for i in sorted({i for pair in pairs for i in pair}):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: (-len(g), g))


def check_data(source: str | Path, config: CheckConfig | None = None) -> CheckResult:
    """Inspect every image of `source`; group exact and near duplicates (see the module docstring)."""
    config = config or CheckConfig()
    entries, layout = collect(str(source), config)
    items = [inspect(name, split, label, obj, config) for name, split, label, obj in entries]
    good = [i for i, it in enumerate(items) if it.sha]
    by_sha: dict[str, list[int]] = {}
    for i in good:
        by_sha.setdefault(items[i].sha, []).append(i)
    exact = sorted((g for g in by_sha.values() if len(g) > 1), key=lambda g: (-len(g), g))
    first = {g[0] for g in by_sha.values()}  # one representative per exact group
    reps = [i for i in good if i in first]
    d = np.asarray([items[i].dhash for i in reps], dtype=np.uint64)
    p = np.asarray([items[i].phash for i in reps], dtype=np.uint64)
    pairs = []
    for j, i in enumerate(reps[:-1]):
        close = hamming(d[j + 1:], items[i].dhash) <= config.near
        close &= hamming(p[j + 1:], items[i].phash) <= config.near
        pairs += [(i, reps[j + 1 + k]) for k in np.flatnonzero(close)]
    log.info("data check %s: %d images, %d exact and %d near duplicate groups", source, len(items), len(exact),
             len(_groups(pairs, len(items))))
    return CheckResult(str(source), layout, items, exact, _groups(pairs, len(items)), config.strict)


def split_leaks(samples: Any, split: dict[str, list[int]]) -> list[tuple[str, str]]:
    """Cheap leakage check for `vtool train`: (held-out image, identical train image) pairs. Files are compared
    by their bytes (no decoding: a copied file), in-memory images by their pixels; `vtool data check` goes
    further (decoded pixels of files, near duplicates)."""

    def sha(index: int) -> str:
        item = samples.items[index]
        return hashlib.sha256(item.read_bytes()).hexdigest() if isinstance(item, Path) else pixel_hash(item)

    train = {sha(i): i for i in split.get("train", [])}
    leaks = []
    for part in ("val", "test"):
        for i in split.get(part, []):
            match = train.get(sha(i))
            if match is not None:
                leaks.append((f"{part}:{_name(samples.items[i], i)}", f"train:{_name(samples.items[match], match)}"))
    return leaks


def _name(item: Any, index: int) -> str:
    return f"{item.parent.name}/{item.name}" if isinstance(item, Path) else f"#{index}"


def warn_leaks(bundle: Any) -> list[tuple[str, str]]:
    """`vtool train`'s leakage warning: held-out images that are exact copies of training images."""
    leaks = split_leaks(bundle.samples, bundle.split)
    if leaks:
        shown = ", ".join(f"{a} = {b}" for a, b in leaks[:3])
        log.warning("data leakage: %d validation/test image(s) are exact copies of training images (%s%s); held-out "
                    "scores will be optimistic. Run `vtool data check %s` for the full list.", len(leaks), shown,
                    ", ..." if len(leaks) > 3 else "", bundle.samples.source)
    return leaks
