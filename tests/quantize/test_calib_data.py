"""Calibration data as users have it, and the rule that judging images never come from calibration sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toolchain.errors import UserInputError
from toolchain.models import LoadedModel
from toolchain.photos import CALIBRATION, EVALUATION, bundled_photos
from toolchain.quantize.calib import flat_images, judge_split, resolve_quant_data
from toolchain.spec import ModelSpec

SPEC = ModelSpec(architecture="tiny", num_classes=10, input_size=(32, 32))


def _model(spec: ModelSpec = SPEC) -> LoadedModel:
    return LoadedModel(spec, "test")


def _images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"img{i:03d}.png")
    return folder


def test_photo_groups_are_disjoint_and_both_load() -> None:
    assert not set(CALIBRATION) & set(EVALUATION)
    calibration = [name for name, _ in bundled_photos("calibration")]
    evaluation = [name for name, _ in bundled_photos("evaluation")]
    assert len(calibration) >= 8 and len(evaluation) >= 8 and not set(calibration) & set(evaluation)


def test_imagenet_model_calibrates_and_judges_on_different_photos() -> None:
    spec = ModelSpec(architecture="big", num_classes=1000, input_size=(32, 32))
    data = resolve_quant_data(_model(spec), None, samples=8, batch_size=4, eval_samples=6)
    desc = data.description
    assert desc["calibration"]["group"] == "calibration" and desc["evaluation"]["group"] == "evaluation"
    assert data.eval_x.shape == (6, 3, 32, 32) and data.eval_labels is None
    assert sum(len(b) for b in data.calibration()) == 8
    photos = desc["calibration"]["photos"]
    assert data.source_ids(8).tolist() == [i % photos for i in range(4)] * 2  # crops name their photo
    assert resolve_quant_data(_model(), np.zeros((8, 3, 32, 32), np.float32), 8, 4).source_ids(5).tolist() == \
        list(range(5))  # rows of an array are their own sources


def test_judge_split_is_stable_disjoint_and_needs_two_images() -> None:
    keys = [f"file{i}.jpg" for i in range(20)]
    calib, judge = judge_split(keys)
    assert not set(calib) & set(judge) and len(calib) + len(judge) == 20 and len(judge) == 6
    assert judge_split(list(reversed(keys)))[1] == sorted(19 - i for i in judge)  # by name, not by order
    with pytest.raises(UserInputError, match="cannot both calibrate and judge"):
        judge_split(["only.jpg"])


def test_flat_folder_calibrates_unlabelled(tmp_path: Path, caplog) -> None:
    folder = _images(tmp_path / "flat", 10)
    data = resolve_quant_data(_model(), str(folder), samples=100, batch_size=4)
    assert data.eval_labels is None and len(data.eval_x) == 3
    assert sum(len(b) for b in data.calibration()) == 7
    assert "only 3 images judge" in caplog.text


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda d: None, "no files"),
        (lambda d: (d / "notes.txt").write_text("x"), "only non-image files"),
        (lambda d: _images(d, 1), "cannot both calibrate and judge"),
    ],
    ids=["empty", "non-images", "one-image"],
)
def test_bad_flat_folders_are_one_line_errors(tmp_path: Path, setup, match: str) -> None:
    folder = tmp_path / "flat"
    folder.mkdir()
    setup(folder)
    with pytest.raises(UserInputError, match=match) as info:
        resolve_quant_data(_model(), str(folder), samples=10, batch_size=4)
    assert "\n" not in str(info.value)


def test_flat_images_sees_an_imagefolder_as_labelled(tmp_path: Path) -> None:
    _images(tmp_path / "data" / "cats", 2)
    assert flat_images(tmp_path / "data") is None


def test_npy_array_splits_rows(tmp_path: Path) -> None:
    path = tmp_path / "calib.npy"
    np.save(path, np.random.default_rng(0).normal(0, 1, (20, 3, 32, 32)).astype(np.float32))
    data = resolve_quant_data(_model(), str(path), samples=100, batch_size=8)
    assert len(data.eval_x) == 6 and sum(len(b) for b in data.calibration()) == 14
    with pytest.raises(UserInputError, match="has shape"):
        np.save(path, np.zeros((4, 3, 8, 8), np.float32))
        resolve_quant_data(_model(), str(path), samples=10, batch_size=8)
    (tmp_path / "bad.npy").write_text("not numpy")
    with pytest.raises(UserInputError, match="not a readable .npy"):
        resolve_quant_data(_model(), str(tmp_path / "bad.npy"), samples=10, batch_size=8)


def test_labelled_data_with_other_classes_judges_by_agreement(tmp_path: Path) -> None:
    from toolchain.data import generate_synthetic

    folder = generate_synthetic(tmp_path / "shapes", classes=3, per_class=10, size=16)
    data = resolve_quant_data(_model(), str(folder), samples=12, batch_size=4)
    assert data.eval_labels is None and data.bundle is None
    assert data.description["evaluation"]["labeled"] is False
    assert sum(len(b) for b in data.calibration()) == 12


def test_labelled_digits_calibrate_on_train_and_judge_on_val() -> None:
    data = resolve_quant_data(_model(), "digits", samples=32, batch_size=16)
    assert data.eval_labels is not None and data.bundle is not None
    assert data.description["calibration"]["part"] == "train" and data.description["evaluation"]["part"] == "val"
