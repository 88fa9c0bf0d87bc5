"""The PTQ steps one by one on tiny hand-built graphs: each must keep the fp32 function and do its job."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from graphs import SPEC, conv_net, layernorm_net, run

from toolchain.quantize import cle, emit, gptq, search, sensitivity, transformer
from toolchain.quantize.graph import OnnxGraph, from_matrix, weight_matrix
from toolchain.quantize.ranges import Histogram, choose_range, mse_range, quant_error, uint8_params


@pytest.fixture()
def x() -> np.ndarray:
    return np.random.default_rng(1).normal(0, 1, (16, 3, 8, 8)).astype(np.float32)


# ------------------------------------------------------------------ graph facts


def test_graph_finds_weighted_layers_with_shapes_and_macs() -> None:
    graph = OnnxGraph(conv_net())
    layers = graph.layers()
    assert [layer.name for layer in layers] == ["conv1", "conv2", "fc"]
    conv1 = layers[0]
    assert conv1.op == "Conv" and conv1.kernel == (3, 3) and conv1.pads == (1, 1, 1, 1) and conv1.bias == "b1"
    assert conv1.macs == 6 * 3 * 3 * 3 * 8 * 8
    assert graph.activation_after(conv1) == (0.0, math.inf)
    assert OnnxGraph(conv_net("Clip")).activation_after(conv1) == (0.0, 6.0)
    assert graph.activation_after(layers[2]) is None  # the logits
    w = graph.array("w3")
    assert np.array_equal(from_matrix(layers[2], weight_matrix(layers[2], w), w.shape), w)


# ------------------------------------------------------------------ cross-layer equalization


def test_cle_keeps_the_function_and_equalizes_channel_ranges(x: np.ndarray) -> None:
    graph = OnnxGraph(conv_net("Relu"))
    before = run(graph.model, x)
    applied, note, figures = cle.equalize(graph, "on", per_channel=False)
    assert applied and figures["pairs"] == 1
    np.testing.assert_allclose(run(graph.model, x), before, rtol=1e-4, atol=1e-4)
    r1, r2 = cle._ranges(graph, graph.layers()[0], graph.layers()[1])
    np.testing.assert_allclose(r1, r2, rtol=1e-4)
    assert figures["mean_channel_range_ratio_after"] > figures["mean_channel_range_ratio_before"]


def test_cle_skips_relu6_chains_and_per_channel_weights_with_a_note() -> None:
    applied, note, _ = cle.equalize(OnnxGraph(conv_net("Clip")), "on", per_channel=False)
    assert not applied and "ReLU6" in note
    applied, note, _ = cle.equalize(OnnxGraph(conv_net("Relu")), "auto", per_channel=True)
    assert not applied and "per-channel" in note
    applied, note, _ = cle.equalize(OnnxGraph(layernorm_net()), "on", per_channel=False)
    assert not applied and "no Conv" in note  # CLE on a transformer: a note, not a crash


def test_high_bias_absorption_is_exact_where_the_relu_passes(x: np.ndarray) -> None:
    graph = OnnxGraph(conv_net("Relu", bias_scale=3.0))
    before = run(graph.model, x)
    pairs, _ = cle.equalizable_pairs(graph)
    # channel minimum of conv1's output over these images: absorb half of it where positive
    probe = graph.save(Path(__import__("tempfile").mkdtemp()) / "g.onnx")
    from toolchain.runners import get_runner

    with get_runner("onnxruntime", probe, spec=SPEC, graph_optimization="disable", expose_outputs=["c1"]) as r:
        c1 = r.run_outputs(x, ["c1"])["c1"]
    minima = np.moveaxis(c1, 1, 0).reshape(c1.shape[1], -1).min(axis=1)
    absorbed = cle.absorb_high_biases(graph, pairs, {"c1": np.maximum(minima, 0) * 0.5})
    assert absorbed == (1 if np.any(minima > 0) else 0)
    after = run(graph.model, x)
    # exact except at conv2's zero-padded border: compare through the network's logits loosely
    assert np.abs(after - before).max() < 0.5 * np.abs(before).max() + 1e-3


# ------------------------------------------------------------------ activation ranges


def test_histogram_grows_and_keeps_counts() -> None:
    hist = Histogram()
    hist.add(np.linspace(0, 1, 1000))
    hist.add(np.linspace(-2, 3, 1000))
    assert hist.lo == pytest.approx(-2) and hist.hi == pytest.approx(3) and hist.counts.sum() == pytest.approx(2000)


def test_mse_range_clips_outliers_and_beats_minmax() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 200_000), [40.0, -35.0]])  # two huge outliers
    hist = Histogram()
    hist.add(values)
    lo, hi = mse_range(hist)
    assert hi < 30 and lo > -30  # the outliers are clipped (MSE still weighs their error: not to 4 sigma)
    c, n = hist.centers(), hist.counts
    assert quant_error(c, n, lo, hi) < quant_error(c, n, hist.lo, hist.hi)
    assert choose_range(hist, "minmax") == (hist.lo, hist.hi)
    p_lo, p_hi = choose_range(hist, "percentile", 99.9)
    assert -5 < p_lo < 0 < p_hi < 5


def test_uint8_params_hold_zero() -> None:
    scale, zero = uint8_params(1.0, 5.0)  # widened to include 0
    assert zero == 0 and scale == pytest.approx(5.0 / 255)
    scale, zero = uint8_params(-1.0, 1.0)
    assert zero in (127, 128)


# ------------------------------------------------------------------ weight reconstruction


def test_gptq_beats_round_to_nearest_on_correlated_inputs() -> None:
    rng = np.random.default_rng(0)
    mix = rng.normal(0, 1, (24, 24))
    inputs = rng.normal(0, 1, (4000, 24)) @ mix  # strongly correlated features, as real activations are
    weights = rng.normal(0, 1, (16, 24))
    hessian = torch.from_numpy(inputs.T @ inputs / len(inputs)).unsqueeze(0)
    scales = gptq.symmetric_scales(weights, 15)  # a coarse grid makes the difference visible
    nearest = gptq.round_to_nearest(weights, scales, 15)
    greedy = gptq.gptq_round(weights, hessian, scales, 15)
    assert np.abs(greedy).max() <= 15 and np.all(greedy == np.round(greedy))
    err_nearest = gptq.relative_error(weights, nearest * scales[:, None], hessian)
    err_greedy = gptq.relative_error(weights, greedy * scales[:, None], hessian)
    assert err_greedy < 0.7 * err_nearest


def test_layer_stats_sample_positions_like_unfold(x: np.ndarray) -> None:
    graph = OnnxGraph(conv_net())
    layer = graph.layers()[0]
    full = gptq.patches(layer, x)
    keep = torch.tensor([0, 5, 64 + 9, 1023])
    sampled = gptq.patches(layer, x, (8, 8), keep)
    np.testing.assert_allclose(sampled.numpy(), full[:, :, keep].numpy(), rtol=1e-6)
    stats = gptq.LayerStats(layer, (0.0, math.inf), 6, 27)
    stats.add(x, np.random.default_rng(0).normal(0, 1, (16, 6, 8, 8)).astype(np.float32))
    assert stats.per_row and stats.hessian().shape == (6, 27, 27)


# ------------------------------------------------------------------ emitting the QDQ model


def test_fit_bias_widens_scales_that_would_overflow_int32() -> None:
    node = type("Node", (), {"op_type": "Conv", "name": "c", "attribute": []})()
    values = np.array([[[[100]]], [[[-50]]]], np.float64)
    scales = np.array([1e-9, 0.1])
    new_values, new_scales = emit._fit_bias(node, values, scales, np.array([10.0, 1.0]), x_scale=1.0)
    assert new_scales[0] > scales[0] and new_scales[1] == scales[1]
    assert np.all(np.abs(np.array([10.0, 1.0]) / new_scales) < 2 ** 31)
    assert new_values[1, 0, 0, 0] == -50


def test_qdq_model_carries_vtool_integers(tmp_path: Path, x: np.ndarray) -> None:
    import onnx
    from onnx import numpy_helper

    src = OnnxGraph(conv_net()).save(tmp_path / "fp32.onnx")
    graph = OnnxGraph.load(src)
    ranges = {name: (-5.0, 5.0) for name in ("input", "c1", "a1", "c2", "a2", "gap", "flat", "logits")}
    cache = emit.write_ranges(ranges, tmp_path / "ranges.json")
    out = emit.quantize_qdq(src, tmp_path / "q.onnx", cache, per_channel=True, reduce_range=False,
                            activation_type="uint8", weight_type="int8", exclude=[], op_types=None)
    layer = graph.layers()[0]
    w = graph.array(layer.weight)
    scales = gptq.symmetric_scales(weight_matrix(layer, w), 127)
    ints = np.full(w.shape, 3, np.int64)
    patched = emit.patch_weights(out, out, {layer.weight: emit.IntWeight(ints, scales)},
                                 {layer.bias: graph.array(layer.bias)})
    assert patched == 1
    model = onnx.load(str(out))
    stored = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert np.all(stored[f"{layer.weight}_quantized"] == 3)
    assert emit.float_layers(out) == {"quantized": ["conv1", "conv2", "fc"], "float": []}
    assert np.isfinite(run(out, x)).all()


# ------------------------------------------------------------------ sensitivity probes and the search


def test_probe_quantizes_only_the_named_layer(x: np.ndarray) -> None:
    graph = OnnxGraph(conv_net())
    layer = graph.layers()[1]
    w = graph.array(layer.weight)
    scales = gptq.symmetric_scales(weight_matrix(layer, w), 127)
    ints = from_matrix(layer, gptq.round_to_nearest(weight_matrix(layer, w), scales, 127), w.shape)
    model = sensitivity.probe_model(graph, layer, emit.IntWeight(ints, scales), (0.0, 4.0))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 1
    out, ref = run(model, x), run(graph.model, x)
    assert 0 < np.abs(out - ref).max() < np.abs(ref).max()


def test_closure_keeps_the_producer_of_a_folded_clip_float() -> None:
    graph = OnnxGraph(conv_net("Clip"))
    assert search.close_float_islands(graph, ["conv2"]) == ["conv2", "conv1"]
    assert search.close_float_islands(graph, ["fc"]) == ["fc"]
    assert search.float_steps(8) == [1, 2, 3, 4, 8] and search.float_steps(2) == [1, 2]


def _candidate(step: str, path: Path, floats: list[str], agreement: float) -> search.Candidate:
    failures = [] if agreement >= 0.95 else [f"agreement {agreement} < 0.95"]
    return search.Candidate(step, path, floats, {"agreement": agreement, "sqnr_db": 20.0}, failures)


def test_search_stops_when_float_layers_would_make_int8_slower(tmp_path: Path) -> None:
    graph = OnnxGraph(conv_net())
    agreement = {0: 0.90, 1: 0.92, 2: 0.97}
    outcome = search.run_search(
        build=lambda floats, tag: tmp_path / f"{tag}.onnx",
        judge=lambda step, path, floats: _candidate(step, path, floats, agreement[len(floats)]),
        rank=lambda: [("conv1", 10.0), ("conv2", 20.0), ("fc", 30.0)],
        speed=lambda path: 0.8 if "float1" in path.name else 1.5,
        graph=graph, max_float=3, min_speedup=1.0, enabled=True)
    assert not outcome.chosen.passed and "slower" in outcome.stopped
    assert [c.step for c in outcome.candidates] == ["all-int8", "float-top-1"]
    assert "--min-speedup" in outcome.candidates[-1].reason


def test_search_returns_the_first_candidate_that_passes(tmp_path: Path) -> None:
    graph = OnnxGraph(conv_net())
    agreement = {0: 0.90, 1: 0.92, 2: 0.97}
    outcome = search.run_search(
        build=lambda floats, tag: tmp_path / f"{tag}.onnx",
        judge=lambda step, path, floats: _candidate(step, path, floats, agreement[len(floats)]),
        rank=lambda: [("conv1", 10.0), ("conv2", 20.0), ("fc", 30.0)],
        speed=lambda path: 1.5, graph=graph, max_float=3, min_speedup=1.0, enabled=True)
    assert outcome.chosen.passed and outcome.chosen.float_layers == ["conv1", "conv2"]
    assert outcome.sensitivity[0] == {"node": "conv1", "probe_sqnr_db": 10.0}


# ------------------------------------------------------------------ SmoothQuant


def test_smoothquant_keeps_the_function_and_flattens_the_outlier_channel() -> None:
    graph = OnnxGraph(layernorm_net())
    x = np.random.default_rng(0).normal(0, 1, (8, 5, 16)).astype(np.float32)
    before = run(graph.model, x)
    pairs = transformer.smoothable(graph)
    assert len(pairs) == 1 and len(pairs[0][1]) == 2
    gamma_before = graph.array("gamma").copy()
    done = transformer.smooth(graph, 0.5, {"ln": np.abs(gamma_before) * 2.0})
    assert done == 1
    np.testing.assert_allclose(run(graph.model, x), before, rtol=1e-4, atol=1e-4)
    gamma = np.abs(graph.array("gamma"))
    assert gamma.max() / np.median(gamma) < gamma_before.max() / np.median(np.abs(gamma_before))


# ------------------------------------------------------------------ residual stream equalization


def test_streams_are_found_and_equalized_without_changing_the_function(x: np.ndarray) -> None:
    from graphs import residual_net

    from toolchain.quantize import streams

    graph = OnnxGraph(residual_net())
    found = streams.find_streams(graph)
    assert len(found) == 1
    stream = found[0]
    assert stream.tensors == ["t1", "t2", "t3"]
    assert {w.name for w in stream.writers} == {"conv_a", "conv_c"}
    assert {r.name for r in stream.readers} == {"conv_b", "conv_d"}
    before = run(graph.model, x)
    probe = graph.save(Path(__import__("tempfile").mkdtemp()) / "g.onnx")
    from toolchain.runners import get_runner

    with get_runner("onnxruntime", probe, spec=SPEC, graph_optimization="disable",
                    expose_outputs=["t1", "t2", "t3"]) as r:
        values = r.run_outputs(x, ["t1", "t2", "t3"])
    maxima = {k: np.abs(np.moveaxis(v, 1, -1).reshape(-1, v.shape[1])).max(axis=0) for k, v in values.items()}
    figures = streams.equalize_streams(graph, found, maxima, alpha=1.0)
    assert figures["streams"] == 1 and figures["mean_range_narrowing"] > 1.5
    np.testing.assert_allclose(run(graph.model, x), before, rtol=1e-4, atol=1e-4)


def test_streams_skip_tensors_that_pass_an_activation() -> None:
    from toolchain.quantize import streams

    assert streams.find_streams(OnnxGraph(conv_net("Relu"))) == []  # conv1 -> Relu: not a linear stream
    assert [s.tensors for s in streams.find_streams(OnnxGraph(conv_net("none")))] == []  # Identity in between


@pytest.mark.parametrize("value", [0.0, 1.0, -5e4, 3e7])
def test_histogram_of_a_constant_tensor_at_any_magnitude(value: float) -> None:
    """A constant activation (a ViT's class-token path on some graphs) once crashed np.histogram (no finite bins)."""
    hist = Histogram()
    hist.add(np.full(64, value, np.float32))
    hist.add(np.full(8, value, np.float32))
    assert hist.counts.sum() == 72 and hist.hi > hist.lo
    lo, hi = choose_range(hist, "mse", 99.99)
    assert np.isfinite(lo) and np.isfinite(hi)


def test_a_slow_speed_verdict_is_retimed_before_it_stops_the_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """One noisy quick look below --min-speedup must not end the fallback search: it is timed again, longer."""
    from toolchain.quantize import speed, stage
    from toolchain.quantize.config import QuantConfig

    looks = iter([{"fp32": 9.0, "int8": 10.0}, {"fp32": 10.0, "int8": 6.0},  # slow, then fast when retimed
                  {"fp32": 10.0, "int8": 5.0},  # fast at once
                  {"fp32": 9.0, "int8": 10.0}, {"fp32": 8.0, "int8": 10.0}])  # slow twice: the longer look counts
    calls: list[int] = []

    def fake_ratio(models, x, threads=None, rounds=15, warmup=3):
        calls.append(rounds)
        return {"median_ms": next(looks)}

    monkeypatch.setattr(speed, "speed_ratio", fake_ratio)
    x = np.zeros((2, *SPEC.input_size), np.float32)[:, None].repeat(SPEC.channels, 1)
    config = QuantConfig(speed=False)
    assert stage._speedup(Path("a.onnx"), Path("b.onnx"), SPEC, x, config) == pytest.approx(10 / 6, abs=1e-3)
    assert calls == [9, 27]
    calls.clear()
    assert stage._speedup(Path("a.onnx"), Path("b.onnx"), SPEC, x, config) == pytest.approx(2.0, abs=1e-3)
    assert calls == [9]  # a fast first look is not timed again
    calls.clear()
    assert stage._speedup(Path("a.onnx"), Path("b.onnx"), SPEC, x, config) == pytest.approx(0.8, abs=1e-3)
    assert calls == [9, 27]
