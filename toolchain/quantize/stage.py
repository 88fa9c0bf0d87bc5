"""The quantize stage entry point: quantize(model, data, config) -> QuantResult (see the package docstring)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.artifact import FORMAT_FILES, Manifest, is_artifact_dir, write_artifact
from toolchain.compare import Thresholds, compare
from toolchain.data import DataBundle
from toolchain.models import LoadedModel
from toolchain.outputs import check_destination
from toolchain.quantize import budget as bud
from toolchain.quantize import modes, prep
from toolchain.quantize.calib import QuantData, resolve_quant_data
from toolchain.quantize.config import QuantConfig
from toolchain.quantize.core import (
    QuantBudgetError,
    QuantResult,
    _data_name,
    _explain_speed,
    check_qat_source,
    check_source,
    default_out,
    fp32_onnx,
)
from toolchain.quantize.search import Candidate
from toolchain.runners import default_runner, run_model
from toolchain.sources import load_model

log = logging.getLogger(__name__)


def quantize(model: LoadedModel | str, data: DataBundle | str | np.ndarray | QuantConfig | None = None,
             config: QuantConfig | None = None, out: str | Path | None = None) -> QuantResult:
    """Quantize `model` (a LoadedModel or a --model source) and write an artifact.

    `data`: a DataBundle, a data source name (digits, an ImageFolder or flat image folder, an .npy
    file), an array of preprocessed images, or None (the model's recorded data, or the bundled
    photos for ImageNet models). A missed budget raises QuantBudgetError (exit 3) listing every
    candidate; nothing is written then.
    """
    if isinstance(data, QuantConfig) and config is None:
        data, config = None, data
    config = config or QuantConfig()
    loaded = load_model(model) if isinstance(model, str) else model
    check_source(loaded, config)
    dest = Path(out or config.out or default_out(loaded, config))
    check_destination(dest, sources=(loaded.artifact.path if loaded.artifact else None, loaded.checkpoint),
                      overwrite=config.overwrite, replaceable=is_artifact_dir)
    hardware = config.hardware()
    ints = config.int_settings(hardware)
    if config.engine == "torchao":
        ints = type(ints)(ints.per_channel, ints.reduce_range, "uint8", "int8")
    qdata = resolve_quant_data(loaded, data, config.samples, config.batch_size, config.eval_samples, config.seed)
    budget = bud.resolve_budget(config.max_drop, config.min_agreement, qdata.labeled)
    start = time.perf_counter()
    log.info("quantizing %s: mode %s, engine %s, target %s (reduce_range=%s)", loaded.name, config.mode,
             config.engine, hardware.target, ints.reduce_range)
    with tempfile.TemporaryDirectory(prefix=".vtool-quant-") as tmp:
        work = Path(tmp)
        ref = run_model(loaded, qdata.eval_x, threads=config.threads)
        judge = Judge(ref, qdata, budget, config.threads)
        fp32_path, export_info = None, {}
        from_ptq = config.mode == "qat" and config.qat().from_ptq(config.engine, qdata.bundle is not None)
        if config.mode == "qat":
            check_qat_source(loaded, from_ptq)
        if config.engine == "onnxruntime" and (config.mode != "qat" or from_ptq):
            fp32_path, export_info = fp32_onnx(loaded, work, _data_name(data, qdata))
            prep.check_input_shape(fp32_path, (loaded.spec.channels, *loaded.spec.input_size))
        result = _run_mode(loaded, qdata, config, ints, work, fp32_path, judge)
        chosen = result.outcome.chosen
        rows = [c.row() for c in result.outcome.candidates]
        summary = _summary(loaded, config, hardware, ints, budget, result, fp32_path, export_info, start)
        if not chosen.passed:
            failure = (f"INT8 budget missed for {loaded.name} ({chosen.reason}); nothing written. Tried: "
                       f"{bud.table(rows)}. {_advice(config, result)}")
            raise QuantBudgetError(failure, QuantResult(None, summary, rows, failure))
        if config.speed:
            cand = LoadedModel.from_file(result.path, loaded.spec, f"quantize:{result.path.name}")
            summary["speed"] = _speed(loaded, fp32_path, cand, qdata.eval_x, config)
            ratio = summary["speed"].get("ratio_vs_fp32_onnx") or summary["speed"].get("ratio_vs_fp32_torch")
            summary["speed_notes"] = _explain_speed(ratio, hardware, len(summary["float_nodes"]), config.mode)
        manifest = Manifest(
            format=result.format, model_file=FORMAT_FILES[result.format], spec=loaded.spec.to_dict(),
            source={**loaded.describe(), "name": loaded.name, **_data_config(loaded)},
            precision="fp16" if config.mode == "fp16" else "int8",
            quantization={**summary, "attempts": rows},
            parity=[_parity_entry(chosen, budget, qdata)],
        )
        artifact = write_artifact(dest, manifest, lambda path: shutil.copyfile(result.path, path),
                                  overwrite=config.overwrite)
    summary["time_s"] = round(time.perf_counter() - start, 2)
    log.info("wrote %s (%.3f MB, %s)", artifact.path, artifact.size_mb, summary["precision"])
    return QuantResult(artifact, summary, rows)


class Judge:
    """Run a candidate through a Runner on the held-out images and hold it to the budget (compare.py)."""

    def __init__(self, reference: np.ndarray, data: QuantData, budget: Thresholds, threads: int | None) -> None:
        self.reference, self.data, self.budget, self.threads = reference, data, budget, threads

    def __call__(self, step: str, path: Path, float_layers: list[str], runner: str = "onnxruntime") -> Candidate:
        logits = run_model(path, self.data.eval_x, runner, spec=self.data.spec, threads=self.threads)
        verdict = compare(self.reference, logits, self.budget, self.data.eval_labels, self.data.spec.labels)
        candidate = Candidate(step, path, list(float_layers), bud.summarize(verdict.metrics), list(verdict.failures))
        delta = verdict.metrics.get("top1_delta")
        log.info("%s (%d layers float): agreement %.4f, SQNR %.1f dB%s -> %s", step, len(float_layers),
                 verdict.metrics["agreement"], verdict.metrics["sqnr_db"],
                 "" if delta is None else f", top-1 delta {delta:+.4f}", "ok" if candidate.passed else candidate.reason)
        return candidate


def _run_mode(loaded: LoadedModel, qdata: QuantData, config: QuantConfig, ints: Any, work: Path,
              fp32_path: Path | None, judge: Judge) -> modes.ModeResult:
    if config.engine == "xnnpack":  # PT2E + XNNPACKQuantizer -> INT8 .pte (ExecuTorch)
        from toolchain.quantize import xnnpack

        return xnnpack.run(loaded, qdata, config, work, judge)
    if config.mode == "qat":
        speed = None if fp32_path is None else (
            lambda path: _speedup(fp32_path, path, loaded.spec, qdata.eval_x, config))
        return modes.qat(loaded, qdata, config, ints, work, judge, fp32_path, speed)
    if config.mode == "ptq" and config.engine == "torchao":
        return modes.torchao_ptq(loaded, qdata, ints, work, judge)
    assert fp32_path is not None
    if config.mode == "ptq":
        return modes.onnx_ptq(fp32_path, qdata, config, ints, work, judge,
                              lambda path: _speedup(fp32_path, path, loaded.spec, qdata.eval_x, config))
    return modes.dynamic_or_fp16(fp32_path, config, ints, work, judge)


def _advice(config: QuantConfig, result: modes.ModeResult) -> str:
    if result.outcome.stopped.startswith("keeping"):
        return (f"The float fallback stopped: {result.outcome.stopped}. Try --mode qat, or lower --min-speedup "
                "or relax --min-agreement/--max-drop.")
    if config.mode == "qat":
        return "QAT itself missed the budget: raise --epochs, or relax --min-agreement/--max-drop."
    return "Raise --max-drop/--min-agreement or --max-float-nodes, or use --mode qat."


def _summary(loaded: LoadedModel, config: QuantConfig, hardware: Any, ints: Any, budget: Thresholds,
             result: modes.ModeResult, fp32_path: Path | None, export_info: dict[str, Any],
             start: float) -> dict[str, Any]:
    base = fp32_path.stat().st_size if fp32_path is not None else _torch_bytes(loaded)
    after = result.path.stat().st_size
    chosen = result.outcome.chosen
    record = dict(result.record)
    float_nodes = sorted(set(record.get("float_nodes_base", [])) | set(chosen.float_layers))
    total = record.get("layers_total")
    return {
        "model": loaded.name, "mode": config.mode, "engine": config.engine,
        "backend": config.engine,  # the key's old name, kept for scripts that read it
        "precision": "fp16" if config.mode == "fp16" else "int8",
        "config": config.to_dict(), "hardware": hardware.to_dict(),
        "resolved": {"reduce_range": ints.reduce_range, "activation_type": ints.activation_type,
                     "weight_type": ints.weight_type},
        "budget": budget.to_dict(), **export_info, **record,
        "size": {"fp32_bytes": base, "quantized_bytes": after, "ratio": round(base / max(after, 1), 3)},
        "size_fp32_mb": round(base / 1e6, 4), "size_mb": round(after / 1e6, 4),
        "size_ratio": round(base / max(after, 1), 3),
        "parity": chosen.metrics, "passed": chosen.passed,
        "float_nodes": float_nodes,
        "float_summary": (f"{len(float_nodes)} of {total} layers ({100 * chosen.float_macs_share:.1f}% of MACs) float"
                          if total else None),
        "float_nodes_why": _why(record, chosen),
        "elapsed_s": round(time.perf_counter() - start, 2),
    }


def _why(record: dict[str, Any], chosen: Candidate) -> dict[str, str]:
    why = {n: "transformer preset: attention MatMul between two activations stays float"
           for n in record.get("float_nodes_base", [])}
    why.update(record.get("float_reasons") or {})
    user = set(record.get("float_nodes_user", []))
    probes = {s["node"]: s["probe_sqnr_db"] for s in (record.get("sensitivity") or [])}
    for node in chosen.float_layers:
        if node in why:
            continue
        if node in user:
            why[node] = "requested (--exclude)"
        elif node in probes:
            why[node] = (f"budget fallback: model output SQNR {probes[node]} dB with only this layer (weights and "
                         "input) in INT8")
        else:
            why[node] = "kept float with the float layer it feeds through a Relu/Clip (ORT folds those into Q)"
    return why


def _data_config(loaded: LoadedModel) -> dict[str, Any]:
    """The data config, split and model options the source recorded, carried into the INT8 manifest (later stages
    reuse the split; the options say how the model's inputs were described)."""
    recorded = loaded.artifact.manifest.source if loaded.artifact is not None else {}
    return {k: loaded.info.get(k) or recorded[k] for k in ("data_config", "split", "options")
            if loaded.info.get(k) or recorded.get(k)}


def _torch_bytes(loaded: LoadedModel) -> int:
    if loaded.module is None:
        return 0
    return int(sum(p.numel() * p.element_size() for p in loaded.module.state_dict().values()))


def _parity_entry(chosen: Candidate, budget: Thresholds, data: QuantData) -> dict[str, Any]:
    return {**chosen.metrics, "thresholds": budget.to_dict(), "passed": chosen.passed,
            "reference": "fp32 source model", "data": data.description.get("evaluation", {}),
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _speedup(fp32: Path, candidate: Path, spec: Any, x: np.ndarray, config: QuantConfig) -> float | None:
    """Candidate speed over fp32 on ONNX Runtime at the speed batch (quick interleaved medians)."""
    from toolchain.quantize.speed import speed_ratio

    batch = np.ascontiguousarray(np.resize(x, (config.speed_batch, *x.shape[1:])).astype(np.float32))
    models = {"fp32": (LoadedModel.from_file(fp32, spec, "fp32"), "onnxruntime"),
              "int8": (LoadedModel.from_file(candidate, spec, "int8"), "onnxruntime")}
    ratio = None
    # A quick look first; a verdict below --min-speedup stops the search, so it is re-timed with 3x the rounds
    # before it counts (one noisy 9-round look once stopped EfficientNet-Lite0 at 0.98x when it ran 1.7x).
    for rounds in (9, 27):
        try:
            med = speed_ratio(models, batch, threads=config.threads, rounds=rounds, warmup=2)["median_ms"]
        except Exception as exc:  # noqa: BLE001 - timing is advisory inside the search
            log.warning("speed check skipped: %s", str(exc)[:160])
            return None
        ratio = round(med["fp32"] / max(med["int8"], 1e-9), 3)
        if ratio >= config.min_speedup:
            break
    return ratio


def _speed(loaded: LoadedModel, fp32_path: Path | None, candidate: LoadedModel, x: np.ndarray,
           config: QuantConfig) -> dict[str, Any]:
    """Median latency of fp32 ONNX (same runner), fp32 torch eager and the candidate, interleaved in one run."""
    from toolchain.quantize.speed import speed_ratio

    batch = np.ascontiguousarray(np.resize(x, (config.speed_batch, *x.shape[1:])).astype(np.float32))
    cand_runner = default_runner(candidate)
    models: dict[str, tuple[LoadedModel, str]] = {"quantized": (candidate, cand_runner)}
    if fp32_path is not None:
        models["fp32_onnx"] = (LoadedModel.from_file(fp32_path, loaded.spec, "quantize:fp32"), "onnxruntime")
    if loaded.is_torch:
        models["fp32_torch"] = (loaded, "torch")
    try:
        result = speed_ratio(models, batch, threads=config.threads)
    except Exception as exc:  # noqa: BLE001 - speed is informative; never fail the stage over it
        log.warning("speed comparison skipped: %s", str(exc)[:160])
        return {"skipped": str(exc)[:160]}
    med = result["median_ms"]
    for name in ("fp32_onnx", "fp32_torch"):
        if name in med:
            result[f"ratio_vs_{name}"] = round(med[name] / max(med["quantized"], 1e-9), 3)
    return result

