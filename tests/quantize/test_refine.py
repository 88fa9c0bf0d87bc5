"""The refit on INT8 inputs (refine.py): it must undo error that reaches a layer, and keep nothing that hurts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from graphs import SPEC, WEIGHT_QMAX, clipped_qdq, run

from toolchain.quantize import gptq, refine


def test_gptq_leaves_a_free_last_column_unrounded() -> None:
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 1, (4, 6))
    scales = gptq.symmetric_scales(weights[:, :5], 15)
    eye = torch.eye(6, dtype=torch.float64).unsqueeze(0)
    q = gptq.gptq_round(weights, eye, scales, 15, free_last=True)
    assert np.all(q[:, :5] == np.round(q[:, :5]))
    np.testing.assert_allclose(q[:, 5] * scales, weights[:, 5])  # independent inputs: nothing propagates
    inputs = rng.normal(0, 1, (2000, 5)) @ rng.normal(0, 1, (5, 5))
    augmented = np.concatenate([inputs, np.ones((2000, 1))], axis=1)
    hessian = torch.from_numpy(augmented.T @ augmented / 2000).unsqueeze(0)
    q = gptq.gptq_round(weights, hessian, scales, 15, free_last=True)
    assert not np.allclose(q[:, 5] * scales, weights[:, 5])  # the bias took rounding error it could absorb
    assert not np.all(q[:, 5] == np.round(q[:, 5]))


def test_refit_undoes_a_systematic_error_and_reports_each_layer(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (64, 3, 8, 8)).astype(np.float32)
    fresh = rng.normal(0, 1, (64, 3, 8, 8)).astype(np.float32)
    graph, src, qdq, weights = clipped_qdq(tmp_path, x, squeeze=0.4)
    reference = run(src, fresh)
    before = run(qdq, fresh)
    biases: dict[str, np.ndarray] = {}
    results = refine.refit_sequential(graph, src, qdq, SPEC, graph.layers(), lambda: iter([x]), 64, WEIGHT_QMAX,
                                      weights, biases)
    assert [r.layer for r in results] == ["conv1", "conv2", "fc"]
    by_name = {r.layer: r for r in results}
    assert by_name["conv2"].kept and by_name["conv2"].error_after < 0.9 * by_name["conv2"].error_before
    assert all(r.error_after < r.error_before for r in results if r.kept)
    assert "b2" in biases  # conv2's bias absorbed part of the clipped activation's mean
    after = run(qdq, fresh)  # the QDQ file was patched in place with what was kept
    error = lambda y: float(((y - reference) ** 2).mean())  # noqa: E731
    assert error(after) < 0.8 * error(before)  # on images the refit never saw


def test_a_refit_that_does_not_lower_held_out_error_is_not_kept(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (32, 3, 8, 8)).astype(np.float32)
    graph, src, qdq, weights = clipped_qdq(tmp_path, x, squeeze=0.4)
    original = {k: v.values.copy() for k, v in weights.items()}
    stored = qdq.read_bytes()

    def worse(self, matrix, bias, qmax, ridge=refine.RIDGE, pair_stride=0):  # a fit that ruins the layer
        scales = gptq.symmetric_scales(matrix, qmax)
        return -gptq.round_to_nearest(matrix, scales, qmax), scales, None if bias is None else -bias

    monkeypatch.setattr(refine.PairStats, "solve", worse)
    results = refine.refit_sequential(graph, src, qdq, SPEC, graph.layers(), lambda: iter([x]), 32, WEIGHT_QMAX,
                                      weights, {})
    assert len(results) == 3 and not any(r.kept for r in results)
    assert all(r.error_after > r.error_before for r in results)
    assert all(np.array_equal(weights[k].values, original[k]) for k in original)
    assert qdq.read_bytes() == stored


def test_refit_is_a_recorded_step_that_says_why_it_did_not_run(exported_tiny_cnn, tmp_path: Path) -> None:
    from toolchain.errors import UserInputError
    from toolchain.quantize import QuantConfig, quantize
    from toolchain.sources import load_model

    source = load_model(str(exported_tiny_cnn("onnx")))

    def refit_step(out: str, **config: object) -> dict:
        settings = {"out": tmp_path / out, "speed": False, "eval_samples": 20, "max_drop": 0.5, **config}
        result = quantize(source, "digits", QuantConfig(**settings))
        return next(s for s in result.summary["steps"] if s["step"] == "weights:refit")

    step = refit_step("ran", samples=32)
    assert step["applied"] == (step["layers_refit"] > 0) and step["layers_tried"] == 5
    assert f"{step['layers_refit']} of 5 layers refit" in step["note"]
    step = refit_step("few", samples=8)
    assert not step["applied"] and "needs >= 16 calibration images" in step["note"]
    assert refit_step("off", samples=32, refit="off")["note"] == "off"
    with pytest.raises(UserInputError, match="--refit"):
        QuantConfig(refit="maybe")
