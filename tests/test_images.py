"""Image decoding, one place for every stage: EXIF orientation, 16-bit and float images scaled (not clipped) to
8 bits, palettes and alpha, decompression bombs and truncated files as one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error, one_torch_thread, run_cli  # noqa: F401
from PIL import Image

from toolchain.data import DataConfig, load_data
from toolchain.errors import UserInputError
from toolchain.preprocess import open_image, to_model_mode
from toolchain.spec import ModelSpec

ORIENTATION = 0x0112
RGB_SPEC = ModelSpec(architecture="t", num_classes=2)


def grey(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64)


def with_orientation(image: Image.Image, path: Path, orientation: int = 6) -> Path:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    image.save(path, exif=exif)
    return path


def ramp(dtype: type, low: float, high: float, shape: tuple[int, int] = (16, 32)) -> np.ndarray:
    return np.linspace(low, high, shape[0] * shape[1]).reshape(shape).astype(dtype)


def test_exif_orientation_is_applied(tmp_path: Path, rng: np.random.Generator) -> None:
    stored = Image.fromarray(rng.integers(0, 255, (20, 40, 3), dtype=np.uint8))
    image = open_image(with_orientation(stored, tmp_path / "phone.png"))
    upright = stored.transpose(Image.Transpose.ROTATE_270)  # what orientation 6 asks a viewer to show
    assert image.size == (20, 40)
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(upright))


def test_predict_sees_a_rotated_phone_photo_upright(tiny_cnn_model, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    from toolchain.predict import predict

    seven = load_digits().images[7]
    upright = Image.fromarray((seven * 255 / 16).astype(np.uint8), "L").resize((32, 32)).convert("RGB")
    upright.save(tmp_path / "upright.png")
    with_orientation(upright.transpose(Image.Transpose.ROTATE_90), tmp_path / "rotated.png")
    a, b = predict(tiny_cnn_model, [tmp_path / "upright.png", tmp_path / "rotated.png"])
    assert (a.label, round(a.confidence, 4)) == (b.label, round(b.confidence, 4))


@pytest.mark.parametrize(("array", "suffix", "expected"), [
    (ramp(np.uint16, 0, 65535), ".png", lambda a: a / 257),        # 16-bit PNG (I;16)
    (ramp(np.uint16, 1000, 60000), ".tif", lambda a: a / 257),     # 16-bit TIFF, not the whole range
    (ramp(np.int32, 0, 65535), ".tif", lambda a: a / 257),         # 32-bit integer (mode I) holding 16-bit data
    (ramp(np.float32, 0.0, 1.0), ".tif", lambda a: a * 255),       # float TIFF in [0, 1]
    (ramp(np.float32, -5.0, 5.0), ".tif", lambda a: (a + 5) / 10 * 255),  # float TIFF in its own range
])
def test_deep_images_are_scaled_not_clipped(tmp_path: Path, array: np.ndarray, suffix: str, expected) -> None:
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(array).save(path)
    image = open_image(path)
    assert image.mode in ("L", "RGB")
    assert np.abs(grey(image) - expected(array.astype(np.float64))).max() <= 1.0
    model_input = np.asarray(to_model_mode(image, RGB_SPEC))
    assert model_input.dtype == np.uint8 and (model_input == 255).mean() < 0.05  # not saturated


def test_cmyk_decodes_to_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    red = np.asarray(to_model_mode(open_image(tmp_path / "cmyk.jpg"), RGB_SPEC))
    assert red[..., 0].mean() > 200 and red[..., 1].mean() < 60


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA"])
def test_transparency_becomes_white(tmp_path: Path, mode: str) -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.paste((200, 0, 0, 255), (0, 0, 4, 8))
    if mode == "P":
        image = rgba.convert("RGB").quantize(colors=4)
        index = image.getpixel((7, 7))
        image.info["transparency"] = index
    else:
        image = rgba.convert(mode)
    image.save(tmp_path / "alpha.png")
    pixels = np.asarray(to_model_mode(open_image(tmp_path / "alpha.png"), RGB_SPEC))
    assert pixels[:, 6:].min() == 255  # the transparent half is white, not black


@pytest.mark.parametrize("side", [100, 42])  # > 2x the limit (DecompressionBombError), between 1x and 2x (warning)
def test_decompression_bombs_are_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int) -> None:
    path = tmp_path / "bomb.png"
    Image.new("RGB", (side, side)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(UserInputError, match="bomb.png"):
        open_image(path)


def test_decompression_bomb_in_predict_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   trained_tiny_cnn: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    one_line_error(run_cli("predict", trained_tiny_cnn, "--image", path), "bomb.png")


def test_pixel_limit_stays_on() -> None:
    import toolchain.cli  # noqa: F401 - importing vtool must not lift Pillow's limit
    import toolchain.data  # noqa: F401

    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS > 0


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files_name_the_file(tmp_path: Path, rng: np.random.Generator, suffix: str) -> None:
    path = tmp_path / f"cut{suffix}"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserInputError, match=f"cut\\{suffix}"):
        open_image(path)


def folder_with(tmp_path: Path, name: str, image: Image.Image, **save: object) -> Path:
    root = tmp_path / "data"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), 0).save(root / cls / "plain.png")
    image.save(root / "a" / name, **save)
    return root


def test_training_data_decodes_deep_images_the_same_way(tmp_path: Path) -> None:
    root = folder_with(tmp_path, "deep.png", Image.fromarray(np.full((16, 16), 32896, dtype=np.uint16)))
    bundle = load_data(RGB_SPEC, DataConfig(source=str(root)))
    index = next(i for i, p in enumerate(bundle.samples.items) if p.name == "deep.png")
    assert abs(grey(bundle.samples.image(index)).mean() - 128) <= 1


def test_training_data_applies_exif(tmp_path: Path) -> None:
    stored = Image.new("L", (10, 30), 0)
    root = folder_with(tmp_path, "phone.png", stored)
    with_orientation(stored, root / "a" / "phone.png")
    bundle = load_data(RGB_SPEC, DataConfig(source=str(root)))
    index = next(i for i, p in enumerate(bundle.samples.items) if p.name == "phone.png")
    assert bundle.samples.image(index).size == (30, 10)


def test_a_bomb_in_an_image_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = folder_with(tmp_path, "bomb.png", Image.new("L", (100, 100)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(UserInputError, match="bomb.png"):
        load_data(RGB_SPEC, DataConfig(source=str(root)))
    one_line_error(run_cli("train", "--model", "tiny-cnn", "--data", root, "--out", tmp_path / "r"), "bomb.png")
