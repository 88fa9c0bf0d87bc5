"""Decoding image files: the one place every stage reads an image (predict, eval, training and calibration
data, ImageFolder checks), so a phone photo or a scientific TIFF means the same thing everywhere.

- EXIF orientation is applied (a phone's portrait shot is stored sideways with a rotate tag).
- 16-bit and 32-bit integer images are scaled by their bit depth, float images by their range, to 8 bits:
  Pillow's own convert() clips them (a 16-bit PNG becomes almost all 255, a float TIFF in [0, 1] all 0).
- Palettes and premultiplied or unusual colour modes become L, LA, RGB or RGBA; alpha stays for
  preprocess.to_model_mode, which puts it on white.
- Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) stays on: over the limit is a one-line
  error naming the file, and so are truncated and unreadable files.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserInputError, first_line

log = logging.getLogger(__name__)

EIGHT_BIT_MODES = ("L", "LA", "RGB", "RGBA")
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError)


@contextmanager
def _bomb_is_an_error(file: Path) -> Any:
    """Pillow raises DecompressionBombError over 2x MAX_IMAGE_PIXELS but only warns between 1x and 2x: both refuse."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise UserInputError(
                f"'{file}' is too large to decode safely ({first_line(exc, 120)}); downscale it, or raise "
                "PIL.Image.MAX_IMAGE_PIXELS in your own code if you trust the file."
            ) from None


def _unreadable(file: Path, exc: BaseException) -> UserInputError:
    return UserInputError(f"'{file}' is not a readable image ({first_line(exc, 120)}); expected a JPEG/PNG/BMP/WebP/"
                          "TIFF file. Remove or replace it.")


def open_image(path: str | Path) -> Any:
    """Decode an image file fully: upright (EXIF), 8-bit L/LA/RGB/RGBA; every failure is a one-line
    UserInputError naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"Image '{file}' does not exist.")
    with _bomb_is_an_error(file):
        try:
            with Image.open(file) as img:
                img.load()
                try:
                    image = ImageOps.exif_transpose(img)
                except DECODE_ERRORS as exc:  # a damaged EXIF block: keep the pixels as stored
                    log.debug("ignoring unreadable EXIF data in %s: %s", file, exc)
                    image = img.copy()
        except (UnidentifiedImageError, *DECODE_ERRORS) as exc:
            raise _unreadable(file, exc) from None
    try:
        return to_8bit(image)
    except ValueError as exc:
        raise UserInputError(f"'{file}' uses colour mode {image.mode}, which vtool cannot convert to RGB "
                             f"({first_line(exc, 80)}); save it as an 8-bit RGB or greyscale image.") from None


def verify_image(path: str | Path) -> None:
    """A cheap integrity check without decoding every pixel (ImageFolder scans thousands of files)."""
    from PIL import Image, UnidentifiedImageError

    file = Path(path)
    with _bomb_is_an_error(file):
        try:
            with Image.open(file) as img:
                img.verify()
        except (UnidentifiedImageError, *DECODE_ERRORS) as exc:
            raise UserInputError(f"'{file}' is not a readable image ({first_line(exc, 100)}); remove or "
                                 "replace it.") from None


def scale_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Deep pixel values -> 0..255: integers by their bit depth (16-bit: /257), floats in [0, 1] x255, anything
    else (negative, beyond 16 bits, floats outside [0, 255]) stretched from its own min..max."""
    values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and 255 < high <= 65535):
        scaled = values / 257.0
    elif mode == "I" and low >= 0 and high <= 255:
        scaled = values
    elif mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    elif mode == "F" and low >= 0 and high <= 255:
        scaled = values
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_8bit(image: Any) -> Any:
    """Any decoded PIL image -> one of L, LA, RGB, RGBA with 8 bits per channel (see scale_to_uint8)."""
    from PIL import Image

    mode = image.mode
    if mode in EIGHT_BIT_MODES:
        return image
    if mode in ("I", "F") or mode.startswith("I;16"):
        return Image.fromarray(scale_to_uint8(np.asarray(image), mode), "L")
    if mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if mode in ("PA", "La", "RGBa"):
        return image.convert("LA" if mode == "La" else "RGBA")
    if mode == "1":
        return image.convert("L")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV...
