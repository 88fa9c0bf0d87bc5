"""vtool data check: planted exact and near duplicates across splits are reported exactly, odd files are named,
and `vtool train` warns on leakage between its splits."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error, run_cli
from PIL import Image

from toolchain.data import generate_synthetic
from toolchain.datacheck import CheckConfig, check_data, dhash, phash, split_leaks, warn_leaks


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/val/test folders of synthetic shapes with planted problems:
    - test/circle/copy.bmp: the pixels of train/circle/00000.png, saved as BMP (an exact duplicate across splits)
    - val/square/near.jpg: train/square/00030.png enlarged 1.25x and saved as JPEG (a near duplicate across splits)
    - train/circle/again.png: a second copy of train/circle/00001.png in the same split (exact, no leak)
    - val/circle/broken.png (truncated), test/square/tiny.png (6x6), val/square/rgba.png (RGBA), train/notes.txt"""
    root = tmp_path_factory.mktemp("planted")
    for split, seed in (("train", 0), ("val", 1), ("test", 2)):
        generate_synthetic(root / split, classes=2, per_class=30 if split == "train" else 8, size=32, seed=seed)
    train = root / "train"
    Image.open(train / "circle" / "00000.png").save(root / "test" / "circle" / "copy.bmp")
    source = Image.open(train / "square" / "00030.png")
    source.resize((40, 40), Image.Resampling.BICUBIC).save(root / "val" / "square" / "near.jpg", quality=90)
    Image.open(train / "circle" / "00001.png").save(train / "circle" / "again.png")
    buffer = io.BytesIO()
    Image.open(train / "circle" / "00002.png").save(buffer, "PNG")
    (root / "val" / "circle" / "broken.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    Image.new("RGB", (6, 6), (200, 10, 10)).save(root / "test" / "square" / "tiny.png")
    rgba = np.random.default_rng(5).integers(0, 255, (32, 32, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "val" / "square" / "rgba.png")
    (train / "circle" / "notes.txt").write_text("not an image")
    return root


def _files(groups: list[dict]) -> list[set[str]]:
    return [{m["file"] for m in g["members"]} for g in groups]


def test_planted_duplicates_are_reported_exactly(planted):
    data = check_data(planted).to_dict()
    assert data["layout"] == "user splits"
    exact = _files(data["exact_duplicates"])
    assert sorted(map(sorted, exact)) == [["test/circle/copy.bmp", "train/circle/00000.png"],
                                          ["train/circle/00001.png", "train/circle/again.png"]]
    near = _files(data["near_duplicates"])
    assert near == [{"train/square/00030.png", "val/square/near.jpg"}]
    assert data["leaks"] == {"exact": 1, "near": 1}
    leak = next(g for g in data["exact_duplicates"] if g["cross_split"])
    assert {m["split"] for m in leak["members"]} == {"train", "test"} and not leak["label_conflict"]


def test_odd_files_and_statistics(planted):
    data = check_data(planted).to_dict()
    problems = {p["file"]: p["problem"] for p in data["problems"]}
    assert problems["val/circle/broken.png"] in ("truncated",) or problems["val/circle/broken.png"].startswith("unr")
    assert problems["test/square/tiny.png"] == "tiny (6x6)"
    assert problems["val/square/rgba.png"] == "mode RGBA"
    assert problems["train/circle/notes.txt"].startswith("not an image")
    stats = data["stats"]
    assert stats["per_split"]["train"] == {"circle": 32, "square": 30}  # 30 + again.png + notes.txt
    assert stats["modes"] == {"RGB": stats["decoded"] - 1, "RGBA": 1}
    assert stats["width"]["min"] == 6 and stats["width"]["max"] == 40


def test_perceptual_hashes_separate_copies_from_other_images(planted):
    a = Image.open(planted / "train" / "square" / "00030.png")
    near = Image.open(planted / "val" / "square" / "near.jpg")
    other = Image.open(planted / "train" / "square" / "00031.png")
    dist = [bin(dhash(a) ^ dhash(x)).count("1") + bin(phash(a) ^ phash(x)).count("1") for x in (near, other)]
    assert dist[0] <= 10 < dist[1]


def test_folder_without_splits_uses_vtools_split(tmp_path):
    root = generate_synthetic(tmp_path / "flat", classes=2, per_class=20, seed=0)
    for i in range(6):
        Image.open(root / "circle" / "00000.png").save(root / "circle" / f"dup{i}.png")
    result = check_data(root, CheckConfig(seed=0))
    assert result.layout == "vtool split (seed 0)" and len(result.exact) == 1 and len(result.exact[0]) == 7
    assert result.leaks["exact"] == 1 and not CheckConfig().strict and bool(result)
    assert not check_data(root, CheckConfig(strict=True))


def test_train_warns_on_leakage(tmp_path, caplog):
    from toolchain.data import DataConfig, load_data
    from toolchain.models import create_model

    root = generate_synthetic(tmp_path / "leaky", classes=2, per_class=20, seed=0)
    for i in range(20):  # half the class is one file: some copies must land in val/test
        shutil.copy(root / "square" / "00020.png", root / "square" / f"dup{i}.png")
    _, spec = create_model("tiny-cnn", num_classes=2)
    bundle = load_data(spec, DataConfig(source=str(root)))
    assert split_leaks(bundle.samples, bundle.split)
    with caplog.at_level(logging.WARNING, logger="toolchain"):
        warn_leaks(bundle)
    assert "data leakage" in caplog.text and "vtool data check" in caplog.text


def test_cli_data_check(planted, tmp_path):
    result = run_cli("data", "check", planted, "--json", tmp_path / "c.json", "--png", tmp_path / "c.png")
    assert result.exit_code == 0, result.stderr
    assert "LEAK" in result.stdout and "copy.bmp" in result.stdout
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["leaks"] == {"exact": 1, "near": 1} and (tmp_path / "c.png").stat().st_size > 10_000
    strict = run_cli("data", "check", planted, "--strict")
    one_line_error(strict, "across splits", code=3)


def test_cli_data_check_errors(tmp_path):
    one_line_error(run_cli("data", "check", tmp_path / "missing"), "not a directory")
    one_line_error(run_cli("data", "check", "digits", "--near", "40"), "--near")
    (tmp_path / "empty").mkdir()
    one_line_error(run_cli("data", "check", tmp_path / "empty"), "no class folders")
