"""One peers case: quantize a model with every tool, judge every result, time them all in one run."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cases import Case, build_case
from .emulated import ACCURACY_KEY as AVX2
from .graphs import float_layers
from .measure import accuracy, interleaved_latency, logits_of, tile
from .tools import DEFAULT_TOOLS, Produced, run_tool

log = logging.getLogger(__name__)

REFERENCE = "onnxruntime"


@dataclass
class Options:
    """What to run and how to time it (defaults: the documented full run)."""

    workdir: Path = Path("exported/peers")
    threads: int = 2
    batches: tuple[int, ...] = (1, 32)
    rounds: int = 15
    warmup: int = 2
    tools: tuple[str, ...] = DEFAULT_TOOLS
    runtimes: tuple[str, ...] = ("onnxruntime",)  # add "openvino" to judge and time there too (doubles the time)
    emulate_avx2: bool = False  # also judge in ONNX Runtime on an emulated AVX2 CPU (emulated.py; accuracy only)


def available_runtimes() -> tuple[str, ...]:
    """The runtimes installed here that the suite can judge and time on."""
    return ("onnxruntime", "openvino") if importlib.util.find_spec("openvino") else ("onnxruntime",)


def cpu_flags() -> list[str]:
    """The INT8-relevant flags, as `grep -o 'avx512_vnni\\|avx2' /proc/cpuinfo | sort -u` prints them."""
    from toolchain.envinfo import parse_cpu_flags, read_cpuinfo

    return sorted(parse_cpu_flags(read_cpuinfo()) & {"avx2", "avx512_vnni", "avx_vnni", "amx_int8"})


def environment(options: Options) -> dict[str, Any]:
    """CPU, flags, versions and timing settings recorded with every result."""
    from importlib.metadata import PackageNotFoundError, version

    from toolchain.envinfo import cpu_model

    versions = {}
    for package in ("onnxruntime", "openvino", "nncf", "onnx", "torch", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(), "threads": options.threads,
            "versions": versions, "runtimes": list(options.runtimes), "rounds": options.rounds,
            "warmup": options.warmup, "batches": list(options.batches), "emulate_avx2": options.emulate_avx2}


def _fp32(case: Case) -> Produced:
    """The fp32 reference as a row of its own."""
    return Produced("fp32", "fp32 (reference)", case.fp32, info={"source": str(case.artifact)})


def _judge(case: Case, produced: Produced, runtimes: tuple[str, ...], reference: Any, threads: int,
           emulate_avx2: bool = False) -> dict:
    """Float layers and accuracy against fp32 of one tool's model, on every runtime (and the emulated AVX2 CPU)."""
    row: dict[str, Any] = {"key": produced.key, "tool": produced.label, "path": str(produced.path or ""),
                           "note": produced.note, "budget_missed": produced.budget_missed,
                           "quantize_s": round(produced.seconds, 1), "info": produced.info, "accuracy": {},
                           "speed": {}}
    if produced.path is None:
        return row
    row["layers"] = float_layers(produced.path).to_dict()
    for runtime in runtimes:
        try:
            logits = logits_of(produced.path, case.spec, case.eval_x, runtime, threads)
        except Exception as exc:  # noqa: BLE001 - a runtime rejecting a tool's graph is a finding
            row["accuracy"][runtime] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            continue
        row["accuracy"][runtime] = accuracy(reference, logits, case.eval_labels)
    if emulate_avx2:
        from .emulated import emulated_logits

        log.info("%s: judging %s in ONNX Runtime on an emulated AVX2 CPU (qemu, slow)", case.name, produced.key)
        started = time.perf_counter()
        try:
            emulated = accuracy(reference, emulated_logits(produced.path, case.eval_x), case.eval_labels)
        except Exception as exc:  # noqa: BLE001 - e.g. contrib ops or no qemu: a finding, not a crash
            emulated = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        row["accuracy"][AVX2] = {**emulated, "seconds": round(time.perf_counter() - started, 1)}
    return row


def _time(case: Case, produced: list[Produced], options: Options) -> dict[int, dict[str, dict[str, Any]]]:
    """Interleaved latency of every model on every runtime, per batch size."""
    models = {f"{p.key}@{runtime}": (p.path, runtime) for p in produced if p.path is not None
              for runtime in options.runtimes}
    timings = {}
    for batch in options.batches:
        log.info("%s: timing %d models at batch %d (%d rounds, interleaved)", case.name, len(models), batch,
                 options.rounds)
        timings[batch] = interleaved_latency(models, case.spec, tile(case.eval_x, batch), options.threads,
                                             options.rounds, options.warmup)
    return timings


def _attach_speed(rows: list[dict[str, Any]], timings: dict[int, dict[str, dict[str, Any]]]) -> None:
    """Put each model's timings and its ratio to fp32 ORT into its row."""
    for batch, measured in timings.items():
        base = measured.get(f"fp32@{REFERENCE}", {}).get("p50_ms")
        for row in rows:
            for name, figures in measured.items():
                key, runtime = name.split("@")
                if key != row["key"]:
                    continue
                entry = dict(figures)
                if base and "p50_ms" in figures:
                    entry["speedup_vs_fp32_ort"] = base / figures["p50_ms"]
                row["speed"].setdefault(runtime, {})[str(batch)] = entry


def _data_checks(case: Case, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Prove every tool saw the same calibration pixels and judging images as vtool's own budget."""
    digest = case.calibration_sha256()
    checks: dict[str, Any] = {"calibration_images": case.calibration_images(),
                              "calibration_batches": len(case.calibration), "calibration_sha256": digest,
                              "judging_images": int(len(case.eval_x)), "labelled": case.eval_labels is not None}
    for row in rows:
        if row["key"].startswith("vtool") and row["info"].get("calibration_sha256"):
            checks[f"{row['key']}_same_calibration"] = row["info"]["calibration_sha256"] == digest
            vtool_n = (row["info"].get("parity") or {}).get("n")
            checks[f"{row['key']}_same_judging_count"] = vtool_n == len(case.eval_x)
    return checks


def run_case(name: str, options: Options) -> dict[str, Any]:
    """Quantize `name` with every tool in `options.tools`, judge on the shared images, time all in one run."""
    started = time.perf_counter()
    load_before = os.getloadavg()
    case = build_case(name, options.workdir / "fp32")
    work = options.workdir / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    produced = [_fp32(case)] + [run_tool(key, case, work, options.threads) for key in options.tools]
    reference = logits_of(case.fp32, case.spec, case.eval_x, REFERENCE, options.threads)
    rows = [_judge(case, p, options.runtimes, reference, options.threads, options.emulate_avx2) for p in produced]
    load_timing = os.getloadavg()
    _attach_speed(rows, _time(case, produced, options))
    return {"model": name, "notes": case.notes, "data": case.description, "checks": _data_checks(case, rows),
            "rows": rows, "load_avg": {"start": load_before, "before_timing": load_timing, "end": os.getloadavg()},
            "seconds": round(time.perf_counter() - started, 1)}
