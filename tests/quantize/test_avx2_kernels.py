"""vtool's AVX2 weight ranges hold on AVX2 kernels, run under `qemu-x86_64 -cpu Haswell-v4` (AVX2, no VNNI).

Why emulate: on a VNNI or AMX CPU the runtimes never dispatch their AVX2 kernels, so the int16 saturation that
reduce_range avoids cannot be seen natively (benchmarks/peers/emulated.py). Without qemu-user (Debian/Ubuntu
package `qemu-user`) or off x86-64 the emulated test skips.
"""

from __future__ import annotations

import importlib.util
import platform
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import SPEC, separable_net
from onnx import numpy_helper

from benchmarks.peers.emulated import probe
from toolchain.quantize.calib import QuantData
from toolchain.quantize.config import QuantConfig
from toolchain.quantize.graph import Layer, OnnxGraph
from toolchain.quantize.hardware import hardware_profile
from toolchain.quantize.ptq import StaticPtq
from toolchain.quantize.qdqtorch import qdq_module

QEMU = shutil.which("qemu-x86_64")
RUNTIMES = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])

needs_qemu = pytest.mark.skipif(QEMU is None or platform.machine() != "x86_64",
                                reason="needs qemu-x86_64 (apt-get install qemu-user) on an x86-64 host")


@needs_qemu
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_avx2_target_weight_ranges_are_exact_on_avx2_kernels_where_8_bits_saturate(runtime: str) -> None:
    ints = QuantConfig(target="avx2").int_settings(hardware_profile("avx2"))
    pointwise = Layer("pw", "Conv", "x", "y", "w", None, weight_shape=(64, 64, 1, 1))
    depthwise = Layer("dw", "Conv", "x", "y", "w", None, group=64, kernel=(3, 3), weight_shape=(64, 1, 3, 3))
    assert ints.qmax_for(pointwise) == 64 and ints.qmax_for(depthwise) == 127
    full_pointwise, pointwise_err, depthwise_err, depthwise5_err = probe(
        runtime, [(1, 1, 127), (1, 1, ints.qmax_for(pointwise)), (64, 3, ints.qmax_for(depthwise)),
                  (64, 5, ints.qmax_for(depthwise))])
    # the emulated CPU really runs the saturating kernel: 8-bit weights lose much of a 1x1 Conv's output ...
    assert full_pointwise > 0.2
    # ... while vtool's AVX2 ranges (7-bit GEMM weights, 8-bit depthwise) are exact to the output's rounding
    assert pointwise_err < 0.01 and depthwise_err < 0.01 and depthwise5_err < 0.01


def test_vnni_and_unknown_targets_keep_one_weight_range() -> None:
    depthwise = Layer("dw", "Conv", "x", "y", "w", None, group=8, weight_shape=(8, 1, 3, 3))
    grouped = Layer("g", "Conv", "x", "y", "w", None, group=4, weight_shape=(8, 2, 3, 3))  # not ORT's depthwise
    vnni = QuantConfig(target="avx512-vnni").int_settings(hardware_profile("avx512-vnni"))
    generic = QuantConfig(target="generic").int_settings(hardware_profile("generic"))
    avx2 = QuantConfig(target="avx2").int_settings(hardware_profile("avx2"))
    assert vnni.qmax_for(depthwise) == 127 and generic.qmax_for(depthwise) == 64  # unknown kernels: 7 bits
    assert avx2.qmax_for(grouped) == 64 and not grouped.channelwise and depthwise.channelwise


@pytest.mark.parametrize(("target", "gemm_qmax", "depthwise_qmax"), [("avx2", 64, 127), ("avx512-vnni", 127, 127),
                                                                     ("generic", 64, 64)])
def test_the_written_model_holds_each_layers_weight_range(tmp_path: Path, target: str, gemm_qmax: int,
                                                          depthwise_qmax: int) -> None:
    """GPTQ, the refit and the QDQ file keep the depthwise conv's 8 bits and the other layers' 7 on AVX2."""
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

    def peaks(tag: str) -> dict[str, int]:
        stored = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(ptq.build([], tag))).graph.initializer}
        return {name: int(np.abs(stored[f"{name}_quantized"].astype(np.int32)).max()) for name in ("w0", "wdw", "wpw")}

    assert peaks("ptq") == {"w0": gemm_qmax, "wdw": depthwise_qmax, "wpw": gemm_qmax}  # symmetric: max |w| -> qmax
    assert ptq.describe()["int"]["depthwise_weight_qmax"] == depthwise_qmax
    # QAT's torch copy rounds and clamps each weight to its own range
    net = qdq_module(ptq.build([], "qat"), ptq.weight_qmax())
    for steps in net.weights.values():
        steps.data.fill_(500.0)
    trained = {name: int(np.abs(ints).max()) for name, (ints, _) in net.integer_weights().items()}
    assert {k: trained[k] for k in ("w0", "wdw", "wpw")} == {"w0": gemm_qmax, "wdw": depthwise_qmax, "wpw": gemm_qmax}
