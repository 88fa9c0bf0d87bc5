"""The quantizers compared, each turning a Case's fp32 ONNX into an INT8 QDQ ONNX file.

- vtool with QuantConfig() defaults, i.e. `vtool quantize --mode ptq` (this CPU's target, float-fallback
  search that weighs speed); optionally also with target 'avx2' (7-bit weights: `--tools ...,vtool-avx2`);
- ONNX Runtime `quantize_static` with its defaults (QDQ, S8S8, per-tensor, MinMax) after
  `quant_pre_process`, and with U8S8 + per-channel + reduce_range (ORT's advice for x86);
- NNCF 3.4 `nncf.quantize` defaults on the ONNX model (optional: `pip install 'vtool[peers]'`).
A tool that fails is reported with its error, never dropped silently.
"""

from __future__ import annotations

import importlib.util
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cases import Case

log = logging.getLogger(__name__)

ALWAYS_PASS = 1e-6  # the smallest --min-agreement: re-building a chosen candidate must never be refused


@dataclass
class Produced:
    """One tool's INT8 model (None when it failed or was skipped) and what it reported."""

    key: str
    label: str
    path: Path | None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    budget_missed: bool = False


Tool = Callable[[Case, Path, int], Produced]


# ------------------------------------------------------------------ vtool


def _vtool_info(summary: dict[str, Any], attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """What vtool's summary says about its run (steps, float layers, search, parity)."""
    steps = [f"{s['step']}{'' if s.get('applied') else ' (off)'}" for s in summary.get("steps", [])]
    return {"float_summary": summary.get("float_summary"), "float_nodes": summary.get("float_nodes", []),
            "steps": steps, "attempts": attempts, "hardware_target": summary.get("hardware", {}).get("target"),
            "resolved": summary.get("resolved"), "budget": summary.get("budget"),
            "search": summary.get("search"), "parity": summary.get("parity"),
            "calibration_sha256": (summary.get("calibration_set") or {}).get("sha256"),
            "time_s": summary.get("elapsed_s")}


def _vtool(target: str) -> Tool:
    """vtool's static PTQ with QuantConfig defaults for `target` (the CLI's `--mode ptq`)."""
    def run(case: Case, work: Path, threads: int) -> Produced:
        from toolchain.quantize import QuantBudgetError, QuantConfig, quantize

        key = "vtool" if target == "auto" else f"vtool-{target}"
        label = "vtool defaults" if target == "auto" else f"vtool --target {target}"
        out = work / key
        started = time.perf_counter()
        try:
            result = quantize(case.loaded, None, QuantConfig(target=target, threads=threads), out=out)
        except QuantBudgetError as exc:
            return _vtool_best(case, exc.result, target, key, label, out, threads, started)
        return Produced(key, label, out / "model.onnx", time.perf_counter() - started,
                        _vtool_info(result.summary, result.attempts))

    return run


def _vtool_best(case: Case, failed: Any, target: str, key: str, label: str, out: Path, threads: int,
                started: float) -> Produced:
    """The budget was missed: rebuild the candidate vtool chose as best (same float layers, no search)."""
    from toolchain.quantize import QuantConfig, quantize

    summary = failed.summary
    base = set(summary.get("float_nodes_base", []))
    exclude = [n for n in summary.get("float_nodes", []) if n not in base]
    config = QuantConfig(target=target, threads=threads, fallback=False, min_agreement=ALWAYS_PASS,
                         nodes_to_exclude=exclude)
    rebuilt = quantize(case.loaded, None, config, out=out)
    info = _vtool_info(summary, failed.attempts)
    info["rebuilt_parity"] = rebuilt.summary.get("parity")
    best = summary.get("parity") or {}
    note = (f"BUDGET MISSED ({failed.failure.split(';')[0][:160]}); row = vtool's best candidate "
            f"({len(exclude)} layers float, agreement {best.get('agreement')}), rebuilt with those layers excluded")
    return Produced(key, label, out / "model.onnx", time.perf_counter() - started, info, note, budget_missed=True)


# ------------------------------------------------------------------ ONNX Runtime


def _pre_process(src: Path, dst: Path) -> str:
    """ORT's recommended quant_pre_process (shape inference, optimisation) before quantize_static."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
        return "quant_pre_process"
    except Exception as exc:  # noqa: BLE001 - symbolic shape inference fails on some exporter graphs
        log.info("quant_pre_process failed (%s); retrying with skip_symbolic_shape", str(exc)[:120])
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return "quant_pre_process(skip_symbolic_shape=True)"


def _reader(input_name: str, batches: list[np.ndarray]) -> Any:
    """An ORT CalibrationDataReader over the shared calibration batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.items, None)
            return None if batch is None else {input_name: batch}

        def rewind(self) -> None:
            self.items = iter(batches)

    return Reader()


def _input_name(path: Path) -> str:
    """The graph's data input (the first input that is not an initializer)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in inits)


def _ort(recommended: bool) -> Tool:
    """ORT quantize_static: its defaults, or U8S8 per-channel + reduce_range."""
    def run(case: Case, work: Path, threads: int) -> Produced:
        from onnxruntime.quantization import QuantType, quantize_static

        key = "ort-u8s8-pc-rr" if recommended else "ort-defaults"
        label = "ORT U8S8 per-channel+reduce_range" if recommended else "ORT quantize_static defaults"
        started = time.perf_counter()
        work.mkdir(parents=True, exist_ok=True)
        pre, out = work / f"{key}-pre.onnx", work / f"{key}.onnx"
        prep = _pre_process(case.fp32, pre)
        options: dict[str, Any] = {}
        if recommended:
            options = {"per_channel": True, "reduce_range": True, "activation_type": QuantType.QUInt8,
                       "weight_type": QuantType.QInt8}
        quantize_static(str(pre), str(out), _reader(_input_name(pre), case.calibration), **options)
        settings = {k: str(v) for k, v in options.items()} or "defaults (QDQ, S8S8, per-tensor, MinMax)"
        return Produced(key, label, out, time.perf_counter() - started, {"pre_process": prep, "settings": settings})

    return run


# ------------------------------------------------------------------ NNCF


def nncf_available() -> bool:
    """Whether NNCF is installed (`pip install 'vtool[peers]'`)."""
    return importlib.util.find_spec("nncf") is not None


def _nncf(case: Case, work: Path, threads: int) -> Produced:
    """NNCF 3.4 `nncf.quantize` with its defaults on the ONNX model."""
    key, label = "nncf", "NNCF 3.4 defaults"
    if not nncf_available():
        return Produced(key, label, None, note="skipped: NNCF is not installed (pip install 'vtool[peers]')")
    import nncf
    import onnx

    started = time.perf_counter()
    model = onnx.load(str(case.fp32))
    name = _input_name(case.fp32)
    images = [image[None] for batch in case.calibration for image in batch]  # NNCF's advice: one image per item
    quantized = nncf.quantize(model, nncf.Dataset(images, lambda x: {name: x}))
    work.mkdir(parents=True, exist_ok=True)
    out = work / "nncf.onnx"
    onnx.save(quantized, str(out))
    info = {"version": nncf.__version__, "items": len(images), "subset_size": 300,
            "images_used": min(300, len(images)),  # NNCF takes the first subset_size items (all of ours here)
            "settings": "nncf.quantize defaults (preset PERFORMANCE, fast bias correction, subset_size 300)"}
    return Produced(key, label, out, time.perf_counter() - started, info)


TOOLS: dict[str, Tool] = {
    "vtool": _vtool("auto"),
    "vtool-avx2": _vtool("avx2"),
    "ort-defaults": _ort(False),
    "ort-u8s8-pc-rr": _ort(True),
    "nncf": _nncf,
}
DEFAULT_TOOLS = ("vtool", "ort-defaults", "ort-u8s8-pc-rr", "nncf")  # the four; vtool-avx2 on request
LABELS = {"vtool": "vtool defaults", "vtool-avx2": "vtool --target avx2",
          "ort-defaults": "ORT quantize_static defaults", "ort-u8s8-pc-rr": "ORT U8S8 per-channel+reduce_range",
          "nncf": "NNCF 3.4 defaults"}


def run_tool(key: str, case: Case, work: Path, threads: int) -> Produced:
    """Run one quantizer; an unexpected failure becomes a row with the error instead of stopping the suite."""
    log.info("%s: quantizing with %s", case.name, LABELS[key])
    try:
        produced = TOOLS[key](case, work, threads)
    except Exception as exc:  # noqa: BLE001 - a peer crashing is a finding to report, not a reason to stop
        log.warning("%s failed on %s: %s", LABELS[key], case.name, exc)
        return Produced(key, LABELS[key], None, note=f"FAILED: {type(exc).__name__}: {str(exc)[:200]}",
                        info={"traceback": traceback.format_exc()[-4000:]})
    log.info("%s: %s done in %.0f s", case.name, LABELS[key], produced.seconds)
    return produced
