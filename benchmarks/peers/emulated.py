"""ONNX Runtime on an emulated AVX2 CPU (qemu-x86_64 -cpu Haswell-v4): its AVX2 kernels, whatever this CPU has.

Why: on a VNNI or AMX CPU the runtimes never dispatch their AVX2 INT8 kernels, whose u8*s8 pairs sum into
saturating int16 (vpmaddubsw), so the accuracy a model keeps on an AVX2-only CPU cannot be measured natively.
qemu-user reports a Haswell CPU to the runtimes' CPU detection and runs the same kernels (slowly: accuracy
only, never speed). This module runs inside the emulator; `emulated_logits` and `probe` start it.

    python -m benchmarks.peers.emulated logits MODEL.onnx X.npy OUT.npy   # logits of a model, batches of 16
    python -m benchmarks.peers.emulated probe RUNTIME CASES.json  # worst-case layer errors (probe_model)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CPU = "Haswell-v4"  # AVX2 + FMA, no AVX-512, no VNNI
ACCURACY_KEY = "onnxruntime-avx2"  # peers rows: accuracy in ONNX Runtime on the emulated AVX2 CPU
CHANNELS, SIDE = 64, 8


def _qemu() -> list[str]:
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        raise RuntimeError("AVX2 emulation needs qemu-x86_64 (Debian/Ubuntu: apt-get install qemu-user)")
    return [qemu, "-cpu", CPU, sys.executable, "-m", "benchmarks.peers.emulated"]


def _run(args: list[str], timeout: float) -> str:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(_qemu() + args, capture_output=True, text=True, timeout=timeout, cwd=root)
    if done.returncode != 0:
        raise RuntimeError(f"emulated run failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def emulated_logits(model: Path, x: np.ndarray, timeout: float = 7200) -> np.ndarray:
    """Logits of the ONNX file `model` on `x`, computed by ONNX Runtime under the emulated AVX2 CPU."""
    with tempfile.TemporaryDirectory(prefix="vtool-avx2-") as tmp:
        inputs, outputs = Path(tmp) / "x.npy", Path(tmp) / "logits.npy"
        np.save(inputs, np.ascontiguousarray(x, dtype=np.float32))
        _run(["logits", str(Path(model).resolve()), str(inputs), str(outputs)], timeout)
        return np.load(outputs)


def probe(runtime: str, cases: list[dict], timeout: float = 600) -> list[float]:
    """Relative max error of worst-case INT8 layers on the emulated AVX2 CPU, one per case (see `probe_model`)."""
    with tempfile.TemporaryDirectory(prefix="vtool-avx2-") as tmp:
        path = Path(tmp) / "cases.json"
        path.write_text(json.dumps(cases))
        return json.loads(_run(["probe", runtime, str(path)], timeout).strip().splitlines()[-1])


def probe_weights(shape: tuple[int, ...], qmax: int) -> np.ndarray:
    """Integer weights (O, I, ...) at their worst case for int16 pair sums: every weight qmax or qmax - 5."""
    weights = np.full(shape, qmax, np.int64)
    weights[:, ::2] = qmax - 5
    return weights


def probe_model(case: dict) -> tuple[object, np.ndarray, np.ndarray]:
    """A QDQ model of one case, its input (every activation at 255) and the exact output.

    case: {"op": "conv"|"gemm", "group": G, "kernel": K, "in_channels": I (default 64), "rows": M (gemm),
    "qmax": Q} or, instead of qmax, "weights": the integers (O, I/G, K, K) or (O, I) as a nested list.
    uint8 input -> int8 per-channel symmetric weights -> uint8 output whose scale holds the exact result.
    """
    from onnx import TensorProto, helper, numpy_helper

    op, qmax = case["op"], case.get("qmax", 127)
    group, kernel = case.get("group", 1), case.get("kernel", 1)
    inputs = case.get("in_channels", CHANNELS)
    shape = (CHANNELS, inputs // group, kernel, kernel) if op == "conv" else (CHANNELS, inputs)
    weights = (np.asarray(case["weights"], np.int64).reshape(shape) if "weights" in case
               else probe_weights(shape, qmax))
    if op == "conv":
        x = np.full((1, inputs, SIDE, SIDE), 255, np.float32)
        want = _exact_conv(x, weights, group)
        layer = helper.make_node("Conv", ["xd", "wd"], ["y"], group=group, pads=[kernel // 2] * 4)
    else:
        x = np.full((case.get("rows", 1), inputs), 255, np.float32)
        want = x.astype(np.int64) @ weights.T
        layer = helper.make_node("Gemm", ["xd", "wd"], ["y"], transB=1)
    out_scale = float(np.abs(want).max()) / 250.0  # the exact output fits uint8
    consts = {"w_q": weights.astype(np.int8), "w_s": np.ones(CHANNELS, np.float32),
              "w_zp": np.zeros(CHANNELS, np.int8), "x_s": np.array(1.0, np.float32), "x_zp": np.array(0, np.uint8),
              "y_s": np.array(out_scale, np.float32), "y_zp": np.array(0, np.uint8)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_s", "x_zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["wd"], axis=0), layer,
             helper.make_node("QuantizeLinear", ["y", "y_s", "y_zp"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "y_s", "y_zp"], ["out"])]
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(want.shape))],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, x, np.clip(np.round(want / out_scale), 0, 255) * out_scale


def _exact_conv(x: np.ndarray, weights: np.ndarray, group: int) -> np.ndarray:
    """The integer Conv (dense or depthwise, 'same' padding) in int64."""
    k = weights.shape[-1]
    padded = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    y = np.zeros((x.shape[0], weights.shape[0], *x.shape[2:]), np.int64)
    for i in range(k):
        for j in range(k):
            window = padded[:, :, i:i + SIDE, j:j + SIDE]
            if group == 1:
                y += np.einsum("nchw,oc->nohw", window, weights[:, :, i, j])
            else:
                y += window * weights[None, :, 0, i, j, None, None]
    return y


def _session(runtime: str, model: object) -> object:
    if runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"x": x})[0]
    import onnx
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(model, str(path))
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_NUM_THREADS": 1})
    return lambda x: compiled({"x": x})[compiled.outputs[0]]


def _probe_main(runtime: str, cases: list[dict]) -> None:
    errors = []
    for case in cases:
        model, x, want = probe_model(case)
        errors.append(float(np.abs(_session(runtime, model)(x) - want).max() / np.abs(want).max()))
    print(json.dumps(errors))


def _logits_main(model: str, inputs: str, outputs: str) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.load(inputs)
    np.save(outputs, np.concatenate([session.run(None, {name: x[i:i + 16]})[0] for i in range(0, len(x), 16)]))


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "probe":
        _probe_main(rest[0], json.loads(Path(rest[1]).read_text()))
    else:
        _logits_main(*rest)
