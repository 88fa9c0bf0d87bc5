"""preprocess.py: the same resize/crop/normalize in every stage, colour modes, image decoding errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toolchain.errors import UserInputError
from toolchain.preprocess import eval_transform, list_image_files, open_image, preprocess, to_model_mode
from toolchain.spec import ModelSpec

SPEC = ModelSpec(architecture="t", num_classes=2, input_size=(8, 8))


def test_a_white_image_normalizes_to_one_with_mean_std_half() -> None:
    batch = preprocess([Image.new("RGB", (20, 12), (255, 255, 255))], SPEC)
    assert batch.shape == (1, 3, 8, 8) and batch.dtype == np.float32
    assert np.allclose(batch, 1.0)


def test_mean_and_std_apply_per_channel() -> None:
    spec = SPEC.replace(mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 0.25))
    x = eval_transform(spec)(Image.new("RGB", (8, 8), (0, 0, 0))).numpy()
    assert np.allclose(x[:, 0, 0], [0.0, -1.0, -4.0])


def test_crop_pct_resizes_larger_then_center_crops() -> None:
    spec = SPEC.replace(input_size=(4, 4), crop_pct=0.5, interpolation="nearest")
    image = Image.new("RGB", (8, 8), (0, 0, 0))
    image.paste((255, 255, 255), (2, 2, 6, 6))  # the centre quarter is white
    x = eval_transform(spec)(image).numpy()  # resize to 8x8, crop the central 4x4: all white
    assert x.shape == (3, 4, 4) and np.allclose(x, 1.0)


def test_colour_modes_follow_the_model() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    assert to_model_mode(rgba, SPEC).getpixel((0, 0)) == (255, 255, 255)  # composited on white
    grey = to_model_mode(Image.new("RGB", (4, 4), (10, 20, 30)), SPEC.replace(channels=1, mean=(0.5,), std=(0.5,)))
    assert grey.mode == "L"
    assert to_model_mode(Image.new("L", (4, 4)), SPEC).mode == "RGB"


def test_open_image_reads_fully_and_refuses_other_files(tmp_path: Path) -> None:
    good = tmp_path / "a.png"
    Image.new("RGB", (5, 3)).save(good)
    assert open_image(good).size == (5, 3)
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(UserInputError, match="not a readable image"):
        open_image(bad)
    with pytest.raises(UserInputError, match="does not exist"):
        open_image(tmp_path / "missing.png")


def test_list_image_files_finds_images_only_sorted(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.PNG", "sub/a.jpg", "notes.txt", "c.webp"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)] == ["b.PNG", "c.webp", "sub/a.jpg"]
