"""Real photos that ship with installed packages (offline), split into two disjoint groups.

ImageNet-class models have no labelled data here, so INT8 calibration and the judging of INT8
against fp32 use crops of real photos. Judging on other crops of the photos that were calibrated
on flatters the quantizer (measured: 0.97 agreement on same-photo crops, 0.92 on other photos), so
the photos are split by SOURCE IMAGE: the calibration group calibrates, the evaluation group
judges (quantize's budget, `vtool parity`, export verification). Each group mixes colour and
greyscale, objects and textures.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from toolchain.errors import MissingDependencyError, UserInputError
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)

GROUPS = ("calibration", "evaluation", "all")
MAX_SIDE = 640
CALIBRATION = ("chelsea", "coffee", "astronaut", "rocket", "camera", "coins", "horse", "brick", "grass",
               "immunohistochemistry", "page")
EVALUATION = ("china", "flower", "grace_hopper", "motorcycle", "hubble_deep_field", "retina", "clock", "moon",
              "gravel", "text", "present")


def _skimage(name: str) -> Callable[[], Any]:
    def load() -> Any:
        from skimage import data as skdata

        array = getattr(skdata, name)()
        return array[0] if isinstance(array, tuple) else array

    return load


def _sklearn(name: str) -> Callable[[], Any]:
    def load() -> Any:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


def _matplotlib(name: str) -> Callable[[], Any]:
    def load() -> Any:
        import matplotlib.cbook as cbook
        from PIL import Image

        with Image.open(cbook.get_sample_data(name, asfileobj=False)) as image:
            return np.asarray(image.convert("RGB"))

    return load


LOADERS: dict[str, Callable[[], Any]] = {
    **{name: _skimage(name) for name in ("chelsea", "coffee", "astronaut", "rocket", "camera", "coins", "horse",
                                         "brick", "grass", "immunohistochemistry", "page", "hubble_deep_field",
                                         "retina", "clock", "moon", "gravel", "text")},
    "motorcycle": _skimage("stereo_motorcycle"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _matplotlib("grace_hopper.jpg"),
    "present": _matplotlib("Minduka_Present_Blue_Pack.png"),
}


def bundled_photos(group: str = "all") -> list[tuple[str, Any]]:
    """(name, RGB PIL image) of the photos in `group` that load here (some need a download: skipped)."""
    if group not in GROUPS:
        raise UserInputError(f"Unknown photo group '{group}': expected one of {', '.join(GROUPS)}.")
    names = {"calibration": CALIBRATION, "evaluation": EVALUATION, "all": CALIBRATION + EVALUATION}[group]
    return [(name, image) for name in names if (image := _photo(name)) is not None]


@functools.cache
def _photo(name: str) -> Any:
    """One decoded photo, its long side capped at MAX_SIDE (crops of it feed 224-px models), or None."""
    from PIL import Image

    try:
        array = np.asarray(LOADERS[name]())
    except Exception as exc:  # noqa: BLE001 - a missing optional photo is skipped, not fatal
        log.debug("skipping bundled photo %s: %s", name, exc)
        return None
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    image = Image.fromarray(array).convert("RGB")
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return image


def photo_crops(spec: ModelSpec, count: int = 200, seed: int = 0, group: str = "evaluation") -> np.ndarray:
    """`count` augmented crops (random resized crop, flip, small rotation, colour jitter) of one photo group."""
    import torch

    from toolchain.preprocess import train_transform

    photos = bundled_photos(group)
    if not photos:
        raise MissingDependencyError("No bundled photos available (scikit-image / scikit-learn are missing).")
    torch.manual_seed(seed)
    augment = train_transform(spec, hflip=True, strength=1.5)
    return np.stack([augment(photos[k][1]).numpy() for k in crop_sources(count, len(photos))]).astype(np.float32)


def crop_sources(count: int, photos: int) -> np.ndarray:
    """Which photo each of `count` crops from `photo_crops` is cut from (they cycle through the group)."""
    return np.arange(count) % photos


def describe(group: str, count: int, seed: int) -> dict[str, Any]:
    names = [name for name, _ in bundled_photos(group)]
    return {"source": f"bundled photos ({group} group: {', '.join(names)})", "group": group, "photos": len(names),
            "crops": count, "n": count, "seed": seed}
