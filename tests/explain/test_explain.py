"""Explanations: Grad-CAM finds the digit, occlusion runs on exported artifacts, explanation parity is ~1.0 for an
exact export and clearly lower for a damaged copy; the CLI writes overlays and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import damaged_checkpoint, one_line_error, run_cli
from placed_digits import mass_in_box, train_placed

from toolchain.errors import UserInputError
from toolchain.explain import ExplainConfig, explain, find_target_layer, heatmap_agreement
from toolchain.explain.agree import ExplainParityConfig, explanation_parity
from toolchain.explain.methods import occlusion, occlusion_masks
from toolchain.models import create_model
from toolchain.runners import get_runner
from toolchain.sources import load_model


@pytest.fixture(scope="module")
def placed_cnn():
    """simple-cnn trained briefly on digits placed at random spots of a 32x32 canvas, and held-out images."""
    return train_placed("simple-cnn", epochs=3)


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory: pytest.TempPathFactory, tiny_cnn_model) -> tuple[Path, int]:
    """A real test-split digit as PNG, and its label."""
    from toolchain.inputs import resolve_bundle

    bundle = resolve_bundle(tiny_cnn_model, None)
    index = bundle.split["test"][0]
    path = tmp_path_factory.mktemp("digit") / "digit.png"
    bundle.samples.image(index).resize((32, 32)).save(path)
    return path, int(bundle.samples.labels[index])


def test_heatmap_agreement_measures():
    rng = np.random.default_rng(0)
    a = rng.random((16, 16))
    assert heatmap_agreement(a, a) == pytest.approx((1.0, 1.0))
    spearman, iou = heatmap_agreement(a, -a)
    assert spearman == pytest.approx(-1.0) and iou == 0.0
    assert heatmap_agreement(np.zeros((4, 4)), np.zeros((4, 4))) == (1.0, 1.0)
    assert heatmap_agreement(np.zeros((4, 4)), a[:4, :4]) == (0.0, 0.0)
    with pytest.raises(UserInputError, match="differ in size"):
        heatmap_agreement(a, a[:8])


def test_occlusion_masks_cover_every_pixel():
    masks = occlusion_masks((32, 30))
    covered = np.zeros((32, 30), bool)
    for top, left, bottom, right in masks:
        covered[top:bottom, left:right] = True
    assert covered.all() and len(masks) == 7 * 7


@pytest.mark.parametrize("arch, expected, reshape", [("tiny-cnn", "7", False), ("tiny-resnet", "10", False),
                                                      ("tiny-vit", "layernorm_before", True)])
def test_target_layer_is_the_last_conv_block_or_the_last_vit_block(arch, expected, reshape):
    module, spec = create_model(arch, num_classes=10)
    layer = find_target_layer(module.eval(), spec.input_shape())
    assert layer.name.endswith(expected) and (layer.reshape is not None) == reshape
    with pytest.raises(UserInputError, match="not a layer"):
        find_target_layer(module, spec.input_shape(), "nope.conv")


def test_gradcam_highlights_the_digit(placed_cnn):
    """Acceptance: the heatmap's mass inside the digit's box is well above the box's share of the image."""
    pytest.importorskip("pytorch_grad_cam")
    from toolchain.explain.methods import grad_cam

    model, (x, y, boxes) = placed_cnn
    for method in ("gradcam", "gradcam++"):
        maps = grad_cam(model.module, x[:100], list(y[:100]), method)
        inside, chance = mass_in_box(maps, boxes[:100])
        print(f"{method}: mass in box {inside.mean():.3f} vs chance {chance.mean():.3f}, "
              f"above chance on {(inside > chance).mean():.0%} of images")
        assert inside.mean() > 1.8 * chance.mean()
        assert (inside > chance).mean() > 0.8


def test_gradcam_on_a_vit_uses_the_token_grid():
    pytest.importorskip("pytorch_grad_cam")
    from toolchain.explain.methods import grad_cam

    module, spec = create_model("tiny-vit", num_classes=10)
    maps = grad_cam(module.eval(), np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32), [0, 1])
    assert maps.shape == (2, 32, 32) and maps.max() == pytest.approx(1.0, abs=1e-3)


def test_occlusion_runs_on_an_onnx_artifact(placed_cnn, tiny_cnn_model, exported_tiny_cnn):
    _, (x, y, boxes) = placed_cnn
    onnx = load_model(str(exported_tiny_cnn("onnx")))
    with get_runner("auto", onnx) as runner:
        maps = occlusion(runner, x[:4], list(y[:4]))
    assert maps.shape == (4, 32, 32) and 0.0 <= maps.min() and maps.max() <= 1.0


def test_explanation_parity_onnx_near_one_damaged_clearly_lower(tiny_cnn_model, trained_tiny_cnn, exported_tiny_cnn,
                                                                tmp_path):
    """Acceptance: fp32 vs its ONNX export ~1.0; vs a copy with noised weights clearly lower."""
    from toolchain.inputs import evaluation_inputs

    x = evaluation_inputs(tiny_cnn_model, part="test").x
    config = ExplainParityConfig(samples=16)
    onnx = explanation_parity(tiny_cnn_model, load_model(str(exported_tiny_cnn("onnx"))), x, config)
    damaged = load_model(str(damaged_checkpoint(trained_tiny_cnn, tmp_path / "damaged.pt", scale=0.8)))
    broken = explanation_parity(tiny_cnn_model, damaged, x, config)
    print("onnx", onnx.summary, "damaged", broken.summary)
    assert onnx.summary["spearman_mean"] > 0.99 and onnx.summary["iou_mean"] > 0.95
    assert broken.summary["spearman_mean"] < onnx.summary["spearman_mean"] - 0.2
    assert broken.summary["iou_mean"] < onnx.summary["iou_mean"] - 0.2
    assert len(broken.worst_pairs) == 4 and broken.to_dict()["n"] == 16


def test_gradcam_parity_refuses_an_artifact(tiny_cnn_model, exported_tiny_cnn):
    with pytest.raises(UserInputError, match="occlusion"):
        explanation_parity(tiny_cnn_model, load_model(str(exported_tiny_cnn("onnx"))), np.zeros((2, 3, 32, 32),
                           np.float32), ExplainParityConfig(method="gradcam"))


def test_explain_library_writes_overlays(tiny_cnn_model, exported_tiny_cnn, digit_png, tmp_path):
    path, label = digit_png
    result = explain(load_model(str(exported_tiny_cnn("onnx"))), [path], ExplainConfig(out=tmp_path, top_k=2))
    item = result.items[0]
    assert result.method == "occlusion" and len(item.top) == 2 and item.heatmap.shape == (32, 32)
    assert Path(item.overlay).is_file() and Path(item.overlay).stat().st_size > 5000
    fixed = explain(tiny_cnn_model, [path], ExplainConfig(method="occlusion", target_class="7", out=None))
    assert fixed.items[0].target == 7 and fixed.items[0].overlay is None


def test_explain_config_errors(tiny_cnn_model, exported_tiny_cnn):
    with pytest.raises(UserInputError, match="explanation method"):
        ExplainConfig(method="lime")
    with pytest.raises(UserInputError, match="occlusion"):
        ExplainConfig(method="gradcam").resolve_method(load_model(str(exported_tiny_cnn("onnx"))))


def test_cli_explain_gradcam(trained_tiny_cnn, digit_png, tmp_path):
    pytest.importorskip("pytorch_grad_cam")
    path, _ = digit_png
    result = run_cli("explain", trained_tiny_cnn, "--image", path, "--out", tmp_path / "ov", "--json",
                     tmp_path / "e.json")
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["method"] == "gradcam" and data["target_layer"] == "7"
    assert Path(data["images"][0]["overlay"]).is_file()


def test_cli_explain_one_line_errors(trained_tiny_cnn, digit_png, tmp_path):
    path, _ = digit_png
    one_line_error(run_cli("explain", trained_tiny_cnn, "--image", path, "--target-class", "12"), "out of range")
    one_line_error(run_cli("explain", trained_tiny_cnn, "--image", path, "--method", "shap"), "explanation method")
    one_line_error(run_cli("explain", trained_tiny_cnn, "--image", tmp_path / "missing.png"), "does not exist")


def test_cli_parity_explain(trained_tiny_cnn, exported_tiny_cnn, tmp_path):
    result = run_cli("parity", trained_tiny_cnn, exported_tiny_cnn("onnx"), "--explain", "--explain-samples", "6",
                     "--explain-png", tmp_path / "pairs.png", "--json", tmp_path / "p.json", "--no-record")
    assert result.exit_code == 0, result.stderr
    explanation = json.loads((tmp_path / "p.json").read_text())["explanation"]
    assert explanation["n"] == 6 and explanation["spearman_mean"] > 0.99 and len(explanation["per_image"]) == 6
    assert "explanation parity" in result.stdout and (tmp_path / "pairs.png").is_file()
