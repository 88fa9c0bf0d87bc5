"""Data sources, splits and every bad ImageFolder input (library and CLI)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import image_folder, one_line_error, one_torch_thread, run_cli  # noqa: F401

from toolchain.data import DataConfig, image_folder_samples, load_data, stratified_split
from toolchain.errors import UserInputError, VtoolError
from toolchain.models import create_model


@pytest.fixture(scope="module")
def tiny_spec():
    return create_model("tiny-cnn", pretrained=False)[1]


def test_digits_are_real_and_split_per_class_reproducibly(tiny_spec) -> None:
    bundle = load_data(tiny_spec, DataConfig(source="digits", seed=3))
    assert len(bundle.samples) == 1797 and bundle.num_classes == 10
    again = load_data(tiny_spec, DataConfig(source="digits", seed=3))
    assert bundle.split == again.split
    other = load_data(tiny_spec, DataConfig(source="digits", seed=4))
    assert other.split["test"] != bundle.split["test"]
    parts = [set(v) for v in bundle.split.values()]
    assert sum(len(p) for p in parts) == 1797 and not (parts[0] & parts[1] or parts[1] & parts[2])
    test_labels = bundle.samples.labels[bundle.split["test"]]
    assert set(test_labels.tolist()) == set(range(10))
    x, y = bundle.arrays("test")
    assert x.shape == (len(bundle.split["test"]), 3, 32, 32) and x.dtype == np.float32


def test_stratified_split_keeps_every_class_in_val_and_test() -> None:
    labels = np.array([0] * 50 + [1] * 5 + [2] * 3)
    split = stratified_split(labels, 0.15, 0.15, seed=0)
    for part in ("val", "test"):
        assert set(labels[split[part]].tolist()) == {0, 1, 2}


def test_synthetic_folder_round_trip(tmp_path, tiny_spec) -> None:
    root = image_folder(tmp_path / "shapes", classes=3, per_class=6)
    samples = image_folder_samples(root)
    assert samples.class_names == ("circle", "square", "triangle") and len(samples) == 18
    bundle = load_data(tiny_spec, DataConfig(source=str(root)))
    assert bundle.describe()["num_images"] == 18


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"val_fraction": 1.5}, "val_fraction"),
    ({"val_fraction": 0.5, "test_fraction": 0.45}, "at least 10%"),
    ({"source": "no-such-data"}, "Unknown data source"),
])
def test_bad_data_config(kwargs, match) -> None:
    with pytest.raises(UserInputError, match=match):
        DataConfig(**kwargs)


# ------------------------------------------------------------------ bad ImageFolder inputs


def _no_class_folders(root):
    root.mkdir()
    (root / "loose.png").write_bytes(b"")
    return "no class folders"


def _empty_class_folder(root):
    image_folder(root)
    (root / "zzz_empty").mkdir()
    return "has no images"


def _corrupt_jpeg(root):
    image_folder(root)
    (root / "circle" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return "not a readable image"


def _non_image_file(root):
    image_folder(root)
    (root / "square" / "notes.txt").write_text("not an image")
    return "not an image file"


BAD_FOLDERS = [_no_class_folders, _empty_class_folder, _corrupt_jpeg, _non_image_file]


@pytest.mark.parametrize("make_bad", BAD_FOLDERS, ids=lambda f: f.__name__.strip("_"))
def test_bad_image_folder_library(tmp_path, make_bad) -> None:
    root = tmp_path / "data"
    match = make_bad(root)
    with pytest.raises(VtoolError, match=match):
        image_folder_samples(root)


@pytest.mark.parametrize("make_bad", BAD_FOLDERS, ids=lambda f: f.__name__.strip("_"))
def test_bad_image_folder_cli(tmp_path, make_bad) -> None:
    root = tmp_path / "data"
    match = make_bad(root)
    result = run_cli("train", "--model", "tiny-cnn", "--data", root, "--epochs", 1, "--out", tmp_path / "run")
    one_line_error(result, match)
    assert not (tmp_path / "run").exists()


def test_missing_data_dir_cli(tmp_path) -> None:
    result = run_cli("train", "--model", "tiny-cnn", "--data", tmp_path / "nope", "--out", tmp_path / "run")
    one_line_error(result, "Unknown data source")
