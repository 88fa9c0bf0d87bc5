"""Splits: the user's own split file, a separate holdout folder, --split all, the split recorded in a checkpoint
and reused by eval and parity; every bad split file is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import image_folder, one_line_error, one_torch_thread, run_cli  # noqa: F401

from toolchain.data import DataConfig, load_data
from toolchain.errors import UserInputError
from toolchain.spec import ModelSpec

SPEC = ModelSpec(architecture="t", num_classes=3)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return image_folder(tmp_path / "shapes", classes=3, per_class=6)


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))


def test_split_file_is_used_as_given(folder: Path, tmp_path: Path) -> None:
    files = _files(folder)
    split_file = tmp_path / "split.json"
    parts = {"train": files[:10], "val": files[10:13], "test": [f"./{f}" for f in files[13:]]}
    split_file.write_text(json.dumps(parts))
    bundle = load_data(SPEC, DataConfig(source=str(folder), split_file=str(split_file)))
    assert {k: len(v) for k, v in bundle.split.items()} == {"train": 10, "val": 3, "test": 5}
    assert [bundle.samples.items[i].relative_to(folder).as_posix() for i in bundle.split["test"]] == files[13:]
    assert bundle.describe()["split_by"] == "split file" and len(bundle.indices("all")) == 18


@pytest.mark.parametrize("content, match", [
    ({"train": ["circle/nope.png"]}, r"names 1 image\(s\) that are not under"),
    ({"train": ["X"], "test": ["X"]}, "lists 'X' in both train and test"),
    ({"trian": []}, "unknown part 'trian': expected train, val and test. Did you mean 'train'"),
    ({"train": "circle"}, "must be a list of image paths"),
    ([], "must be a JSON object"),
])
def test_bad_split_files(folder: Path, tmp_path: Path, content: object, match: str) -> None:
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps(content))
    with pytest.raises(UserInputError, match=match):
        load_data(SPEC, DataConfig(source=str(folder), split_file=str(split_file)))


def test_bad_split_file_and_holdout_on_the_cli(folder: Path, tmp_path: Path) -> None:
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": [*_files(folder)[:5], "dog/1.png"]}))
    one_line_error(run_cli("train", "--model", "tiny-cnn", "--data", folder, "--split-file", split_file,
                           "--epochs", 1, "--out", tmp_path / "run"), "not under")
    assert not (tmp_path / "run").exists()
    one_line_error(run_cli("train", "--model", "tiny-cnn", "--data", "digits", "--split-file", split_file,
                           "--out", tmp_path / "run"), "--data 'digits' is not a directory")
    one_line_error(run_cli("eval", "--model", "tiny-cnn", "--data", "digits", "--test-data", tmp_path / "none"),
                   "--test-data")
    other = image_folder(tmp_path / "other", classes=4, per_class=2)
    one_line_error(run_cli("train", "--model", "tiny-cnn", "--data", folder, "--test-data", other,
                           "--out", tmp_path / "run"), "class folder(s) cross")


def test_holdout_folder_is_the_test_split_recorded_and_reused(folder: Path, tmp_path: Path) -> None:
    holdout = image_folder(tmp_path / "holdout", classes=2, per_class=5)  # circle, square: a subset of the classes
    run = tmp_path / "run"
    result = run_cli("train", "--model", "tiny-cnn", "--data", folder, "--test-data", holdout, "--epochs", 1,
                     "--batch-size", 8, "--out", run, "--no-augment")
    assert result.exit_code == 0, result.stderr
    from toolchain.sources import load_model

    trained = load_model(str(run))
    assert trained.info["data_config"]["test_data"] == str(holdout) and len(trained.info["split"]["test"]) == 10
    report = tmp_path / "eval.json"
    result = run_cli("eval", run, "--json", report)  # the recorded split: its test part is the holdout
    assert result.exit_code == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["schema"] == "vtool.eval/1" and data["n"] == 10 and data["data"]["test_data"] == str(holdout)
    assert "vtool's own seeded split" not in result.stderr
    result = run_cli("eval", run, "--test-data", holdout, "--split", "all", "--json", report)
    assert json.loads(report.read_text())["n"] == 28  # every image: the 18 of --data and the 10 of the holdout


def test_split_all_scores_a_holdout_folder_whole(folder: Path, tmp_path: Path) -> None:
    report = tmp_path / "e.json"
    result = run_cli("eval", "--model", "tiny-cnn", "--num-classes", 3, "--data", folder, "--json", report)
    assert result.exit_code == 0 and json.loads(report.read_text())["n"] < 18
    assert "vtool's own seeded split" in result.stderr and "--split all" in result.stderr  # said, not silent
    run_cli("eval", "--model", "tiny-cnn", "--num-classes", 3, "--data", folder, "--split", "all", "--json", report)
    scored = json.loads(report.read_text())
    assert scored["n"] == 18 and scored["class_names"] == ["circle", "square", "triangle"]
