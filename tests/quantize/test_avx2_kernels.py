"""vtool's AVX2 weight ranges hold on AVX2 kernels, run under `qemu-x86_64 -cpu Haswell-v4` (AVX2, no VNNI).

Why emulate: on a VNNI or AMX CPU the runtimes never dispatch their AVX2 kernels, so the int16 saturation that
reduce_range avoids cannot be seen natively (benchmarks/peers/emulated.py). Without qemu-user (Debian/Ubuntu
package `qemu-user`) or off x86-64 the emulated tests skip.
"""

from __future__ import annotations

import importlib.util
import platform
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from graphs import SPEC, separable_net
from onnx import numpy_helper

from benchmarks.peers.emulated import CHANNELS, probe
from toolchain.quantize import gptq
from toolchain.quantize.calib import QuantData
from toolchain.quantize.config import PAIR_LIMIT, QuantConfig, WeightRange
from toolchain.quantize.graph import Layer, OnnxGraph, from_matrix, weight_matrix
from toolchain.quantize.hardware import hardware_profile
from toolchain.quantize.ptq import StaticPtq
from toolchain.quantize.qdqtorch import qdq_module

QEMU = shutil.which("qemu-x86_64")
RUNTIMES = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
needs_qemu = pytest.mark.skipif(QEMU is None or platform.machine() != "x86_64",
                                reason="needs qemu-x86_64 (apt-get install qemu-user) on an x86-64 host")
AVX2 = QuantConfig(target="avx2").int_settings(hardware_profile("avx2"))


def _layers() -> dict[str, Layer]:
    c = CHANNELS
    return {"pointwise": Layer("pw", "Conv", "x", "y", "w", None, weight_shape=(c, c, 1, 1)),
            "conv3x3": Layer("c3", "Conv", "x", "y", "w", None, kernel=(3, 3), weight_shape=(c, c, 3, 3)),
            "gemm": Layer("fc", "Gemm", "x", "y", "w", None, trans_b=True, weight_shape=(c, c)),
            "depthwise": Layer("dw", "Conv", "x", "y", "w", None, group=c, kernel=(3, 3), weight_shape=(c, 1, 3, 3))}


def _worst_case_ints(layer: Layer, limits: WeightRange) -> np.ndarray:
    """vtool's rounding of heavy-tailed weights whose large values often meet in one input-channel pair, made
    all positive: with every input at 255 no pair sum can be larger than this."""
    rng = np.random.default_rng(0)
    weights = rng.standard_t(2, layer.weight_shape)
    if layer.weight_shape[1] > 1:  # a tenth of the pairs get a second large weight
        weights[:, 1::2] += np.where(rng.random(weights[:, 1::2].shape) < 0.1, weights[:, 0::2] / 2, 0.0)
    matrix = weight_matrix(layer, weights)
    scales = gptq.symmetric_scales(matrix, limits.qmax, limits.pair_stride(layer))
    ints = gptq.round_to_nearest(matrix, scales, limits.qmax, limits.pair_stride(layer))
    return np.abs(from_matrix(layer, ints, layer.weight_shape)).astype(np.int64)


def _case(layer: Layer, ints: np.ndarray) -> dict:
    op = "gemm" if layer.op == "Gemm" else "conv"
    return {"op": op, "group": layer.group, "kernel": layer.kernel[0], "rows": 1, "weights": ints.tolist()}


@needs_qemu
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_avx2_weight_ranges_are_exact_on_avx2_kernels_where_plain_8_bits_saturate(runtime: str) -> None:
    layers = _layers()
    ranges = {name: AVX2.weight_range(layer) for name, layer in layers.items()}
    assert ranges["depthwise"] == WeightRange(127) and ranges["pointwise"] == WeightRange(127, paired=True)
    assert ranges["conv3x3"].paired and ranges["gemm"].paired
    plain = {name: _worst_case_ints(layer, WeightRange(127)) for name, layer in layers.items()}
    vtool = {name: _worst_case_ints(layer, ranges[name]) for name, layer in layers.items()}
    assert all(vtool[n].max() > AVX2.weight_qmax for n in vtool)  # finer than 7-bit weights
    cases = [_case(layers[n], plain[n]) for n in ("pointwise", "gemm")]
    cases += [_case(layers[n], vtool[n]) for n in layers]
    stem = Layer("stem", "Conv", "x", "y", "w", None, kernel=(3, 3), weight_shape=(CHANNELS, 3, 3, 3))
    assert AVX2.weight_range(stem) == WeightRange(AVX2.weight_qmax)  # odd channels: ORT pairs across positions
    cases += [{"op": "conv", "kernel": 1, "qmax": AVX2.weight_qmax},  # 7-bit (unpaired layers)
              {"op": "conv", "kernel": 3, "in_channels": 3, "qmax": AVX2.weight_qmax}]
    names = ["plain pointwise", "plain gemm", *layers, "7-bit", "7-bit stem"]
    errors = dict(zip(names, probe(runtime, cases), strict=True))
    # the emulated CPU really runs the saturating kernels: plain 8-bit pairs lose much of the output ...
    assert errors["plain pointwise"] > 0.02 and errors["plain gemm"] > 0.02, errors
    # ... while vtool's AVX2 ranges are exact to the output's rounding (half a step: 1/500 of its range)
    assert all(errors[n] < 0.005 for n in (*layers, "7-bit", "7-bit stem")), errors


def test_vnni_and_unknown_targets_keep_one_weight_range() -> None:
    depthwise = Layer("dw", "Conv", "x", "y", "w", None, group=8, weight_shape=(8, 1, 3, 3))
    grouped = Layer("g", "Conv", "x", "y", "w", None, group=4, weight_shape=(8, 2, 3, 3))  # not ORT's depthwise
    stem = Layer("stem", "Conv", "x", "y", "w", None, kernel=(3, 3), weight_shape=(8, 3, 3, 3))  # odd channels
    for target, qmax in (("avx512-vnni", 127), ("generic", 64), ("avx512", 64)):  # avx512: not emulated, 7 bits
        ints = QuantConfig(target=target).int_settings(hardware_profile(target))
        assert {ints.weight_range(layer) for layer in (depthwise, grouped, stem)} == {WeightRange(qmax)}
    assert AVX2.weight_range(grouped) == AVX2.weight_range(stem) == WeightRange(64)
    assert AVX2.weight_range(depthwise) == WeightRange(127) and depthwise.channelwise and not grouped.channelwise


def test_pair_clamp_holds_every_input_channel_pair_and_gptq_keeps_the_cut() -> None:
    layer = _layers()["conv3x3"]
    rng = np.random.default_rng(1)
    matrix = weight_matrix(layer, rng.standard_t(2, layer.weight_shape))
    scales = gptq.symmetric_scales(matrix, 127)
    hessian = torch.eye(matrix.shape[1], dtype=torch.float64)[None]
    for ints in (gptq.round_to_nearest(matrix, scales, 127, pair_stride=9),
                 gptq.gptq_round(matrix, hessian, scales, 127, pair_stride=9)):
        pairs = np.abs(from_matrix(layer, ints, layer.weight_shape))
        assert (pairs[:, 0::2] + pairs[:, 1::2]).max() <= PAIR_LIMIT and pairs.max() == 127
    unpaired = np.abs(from_matrix(layer, gptq.round_to_nearest(matrix, scales, 127), layer.weight_shape))
    assert (unpaired[:, 0::2] + unpaired[:, 1::2]).max() > PAIR_LIMIT  # the data needs the cut


@pytest.mark.parametrize("target", ["avx2", "avx512-vnni", "generic"])
def test_the_written_model_holds_each_layers_weight_range(tmp_path: Path, target: str) -> None:
    """GPTQ, the refit, the QDQ file and QAT's torch copy all keep each layer's range."""
    x = np.random.default_rng(0).normal(0, 1, (48, 3, 8, 8)).astype(np.float32)
    data = QuantData(SPEC, lambda: iter([x[:16], x[16:32]]), x[32:], None)
    config = QuantConfig(target=target, samples=32, recon_samples=32)
    src = OnnxGraph(separable_net()).save(tmp_path / "fp32.onnx")
    ptq = StaticPtq(src, SPEC, data, config.calibration_settings(), config.int_settings(hardware_profile(target)),
                    config.steps(), tmp_path, threads=1)
    ptq.prepare()
    ptq.calibrate()
    ptq.refit()
    assert next(r for r in ptq.records if r.step == "weights:refit").applied
    expected = {"avx2": {"w0": (64, False), "wdw": (127, False), "wpw": (127, True), "w3": (127, True)},
                "avx512-vnni": dict.fromkeys(("w0", "wdw", "wpw", "w3"), (127, False)),
                "generic": dict.fromkeys(("w0", "wdw", "wpw", "w3"), (64, False))}[target]

    def check(path: Path) -> None:
        stored = {i.name: numpy_helper.to_array(i).astype(np.int32) for i in onnx.load(str(path)).graph.initializer}
        for name, (qmax, paired) in expected.items():
            ints = np.abs(stored[f"{name}_quantized"])
            assert ints.max() <= qmax and (_pair_max(ints) <= PAIR_LIMIT if paired else True), name
            if name in ("w0", "wdw"):
                assert ints.max() == qmax  # symmetric scales: the channel's largest weight lands on qmax

    check(ptq.build([], "ptq"))
    net = qdq_module(ptq.build([], "qat"), ptq.weight_ranges())  # QAT's torch copy clamps each layer alike
    for steps in net.weights.values():
        steps.data.fill_(500.0)
    for name, (ints, _) in net.integer_weights().items():
        qmax, paired = expected[name]
        ints = np.abs(ints.astype(np.int32))  # Conv (O, I, kh, kw) and Gemm transB (N, K): pairs along axis 1
        assert ints.max() == qmax and (_pair_max(ints) == PAIR_LIMIT if paired else True), name


def _pair_max(ints: np.ndarray) -> int:
    """The largest |q[2i]| + |q[2i+1]| over input-channel pairs (axis 1) at one kernel position."""
    n = ints.shape[1] // 2 * 2
    return int((ints[:, 0:n:2] + ints[:, 1:n:2]).max())
