"""The quantize stage entry point: quantize(model, data, config) -> QuantResult."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.artifact import FORMAT_FILES, Manifest, write_artifact
from toolchain.compare import Thresholds
from toolchain.data import DataBundle
from toolchain.errors import UserInputError
from toolchain.models import LoadedModel
from toolchain.quantize import budget as bud
from toolchain.quantize import ort_ptq
from toolchain.quantize.calib import HashingBatches, resolve_quant_data
from toolchain.quantize.config import QuantConfig
from toolchain.quantize.core import (
    QuantBudgetError,
    QuantResult,
    _check_dest,
    _data_name,
    _explain_speed,
    check_source,
    default_out,
    fp32_onnx,
    static_ptq,
)
from toolchain.runners import default_runner, run_model
from toolchain.sources import load_model

log = logging.getLogger(__name__)


def quantize(model: LoadedModel | str, data: DataBundle | str | np.ndarray | QuantConfig | None = None,
             config: QuantConfig | None = None, out: str | Path | None = None) -> QuantResult:
    """Quantize `model` (a LoadedModel or a --model source) and write an artifact; see the package docstring.

    `data`: a DataBundle, a data source name (digits, a folder...), an array of calibration images, or
    None (the model's recorded data, or bundled photos for ImageNet models). A missed budget raises
    QuantBudgetError (exit 3) listing every attempt; nothing is written then.
    """
    if isinstance(data, QuantConfig) and config is None:
        data, config = None, data
    config = config or QuantConfig()
    loaded = load_model(model) if isinstance(model, str) else model
    check_source(loaded, config)
    hardware = config.hardware()
    resolved = config.resolved(hardware)
    if config.engine == "torchao":
        resolved["activation_type"], resolved["weight_type"] = "uint8", "int8"
    qdata = resolve_quant_data(loaded, data, config.samples, config.batch_size, config.eval_samples, config.seed)
    if config.mode == "qat" and qdata.bundle is None:
        raise UserInputError("--mode qat fine-tunes on labeled training images: pass --data (digits, an ImageFolder "
                             "directory with the model's classes).")
    budget = bud.resolve_budget(config.max_drop, config.min_agreement, qdata.labeled)
    dest = Path(out or config.out or default_out(loaded, config))
    _check_dest(dest)
    data_name = _data_name(data, qdata)
    start = time.perf_counter()
    log.info("quantizing %s: mode %s, engine %s, target %s (reduce_range=%s)", loaded.name, config.mode,
             config.engine, hardware.target, resolved["reduce_range"])
    with tempfile.TemporaryDirectory(prefix=".vtool-quant-") as tmp:
        work = Path(tmp)
        ref = run_model(loaded, qdata.eval_x, threads=config.threads)
        record: dict[str, Any] = {"hardware": hardware.to_dict(), "resolved": resolved, "budget": budget.to_dict()}
        attempts: list[bud.Attempt] = []
        fp32_path: Path | None = None
        if config.engine == "onnxruntime":
            fp32_path, info = fp32_onnx(loaded, work, data_name)
            ort_ptq.check_input_shape(fp32_path, (loaded.spec.channels, *loaded.spec.input_size))
            record.update(info)
        candidate, fmt = _run_mode(loaded, qdata, config, resolved, budget, ref, work, fp32_path, record, attempts)
        cand_model = LoadedModel.from_file(candidate, loaded.spec, f"quantize:{candidate.name}")
        final = attempts[-1] if attempts and attempts[-1].passed else None
        chosen = record.pop("chosen", None) or final or (attempts[-1] if attempts else None)
        passed = bool(chosen and chosen.passed)
        summary = _summary(loaded, config, record, chosen, fp32_path, candidate, start)
        summary["passed"] = passed
        if not passed:
            failure = (f"INT8 budget missed for {loaded.name} ({chosen.reason if chosen else 'no attempt'}); nothing "
                       f"written. Tried: {bud.table(attempts)}. Raise --max-drop/--min-agreement or --max-float-nodes, "
                       "or use --mode qat.")
            raise QuantBudgetError(failure, QuantResult(None, summary, [a.row() for a in attempts], failure))
        if config.speed:
            summary["speed"] = _speed(loaded, fp32_path, cand_model, qdata.eval_x, config)
            ratio = summary["speed"].get("ratio_vs_fp32_onnx") or summary["speed"].get("ratio_vs_fp32_torch")
            summary["speed_notes"] = _explain_speed(ratio, hardware, len(summary["float_nodes"]), config.mode)
        manifest = Manifest(
            format=fmt, model_file=FORMAT_FILES[fmt], spec=loaded.spec.to_dict(),
            source={**loaded.describe(), "name": loaded.name,
                    **({"data_config": loaded.info["data_config"]} if loaded.info.get("data_config") else {}),
                    **_recorded_data_config(loaded)},
            precision="fp16" if config.mode == "fp16" else "int8",
            quantization={**summary, "attempts": [a.row() for a in attempts]},
            parity=[_parity_entry(chosen, budget)],
        )
        artifact = write_artifact(dest, manifest, lambda path: shutil.copyfile(candidate, path))
    summary["time_s"] = round(time.perf_counter() - start, 2)
    log.info("wrote %s (%.3f MB, %s)", artifact.path, artifact.size_mb, summary["precision"])
    return QuantResult(artifact, summary, [a.row() for a in attempts])


def _torch_logits(converted: Any, spec: Any, x: np.ndarray) -> np.ndarray:
    """A torchao-converted graph (in memory) run through the eager torch runner."""
    return run_model(LoadedModel(spec, "quantize:torchao-pt2e", module=converted), x, "torch")


def _recorded_data_config(loaded: LoadedModel) -> dict[str, Any]:
    if loaded.artifact is not None and loaded.artifact.manifest.source.get("data_config"):
        return {"data_config": loaded.artifact.manifest.source["data_config"]}
    return {}


def _run_mode(loaded: LoadedModel, qdata: Any, config: QuantConfig, resolved: dict[str, Any], budget: Thresholds,
              ref: np.ndarray, work: Path, fp32_path: Path | None, record: dict[str, Any],
              attempts: list[bud.Attempt]) -> tuple[Path, str]:
    """Produce the candidate model file; append what was judged to `attempts`."""
    from toolchain.quantize import dynamic, pt2e

    spec = loaded.spec

    def judge(step: str, logits: np.ndarray, float_nodes: list[str] | None = None) -> None:
        metrics, passed, reason = bud.judge(ref, logits, qdata.eval_labels, budget, spec.labels)
        attempts.append(bud.Attempt(step, config.calibration, float_nodes or [], bud.summarize(metrics), passed,
                                    reason))

    if config.engine == "xnnpack":  # PT2E + XNNPACKQuantizer -> INT8 .pte (ExecuTorch)
        from toolchain.quantize import xnnpack

        return xnnpack.run(loaded, qdata, config, resolved, work, record, judge)
    if config.mode == "ptq" and config.engine == "onnxruntime":
        pre = work / "pre.onnx"
        record.update(ort_ptq.preprocess(fp32_path, pre))
        vit = config.preset == "vit" or (config.preset == "auto" and ort_ptq.looks_like_transformer(pre))
        record["preset"] = "vit" if vit else "cnn"
        path, tried, extra = static_ptq(pre, qdata, config, resolved, budget, ref, work, vit)
        attempts.extend(tried)
        record.update(extra)
        record["chosen"] = next(a for a in tried if getattr(a, "path", None) == path)
        record["settings"] = ort_ptq.StaticSettings(
            record["chosen"].calibration, config.per_channel, resolved["reduce_range"], resolved["activation_type"],
            resolved["weight_type"], config.percentile, list(ort_ptq.VIT_OP_TYPES) if vit else None).describe()
        record["calibration_set"] = {**qdata.description.get("calibration", {}), **record.pop("calibration_hash")}
        record["node_counts"] = ort_ptq.node_count(path)
        return path, "onnx"
    if config.mode == "ptq":  # torchao PT2E -> .pt2
        batches = HashingBatches(qdata)
        converted = pt2e.ptq(loaded.module, spec, batches, resolved["reduce_range"])
        record["calibration_set"] = {**qdata.description.get("calibration", {}), **batches.finish()}
        record["settings"] = pt2e.describe(False, resolved["reduce_range"])
        judge("torchao-pt2e", _torch_logits(converted, spec, qdata.eval_x))
        path = work / "model.pt2"
        pt2e.save_pt2(converted, spec, path)
        return path, "pt2"
    if config.mode == "qat":
        converted, history = pt2e.qat(loaded.module, spec, qdata.bundle, config.epochs, config.lr,
                                      resolved["reduce_range"], config.freeze_bn_after, seed=config.seed,
                                      augment=config.augment)
        record["qat"] = {"epochs": config.epochs, "lr": config.lr, "optimizer": "Adam + cosine",
                         "augment": config.augment,
                         "freeze_bn_after_epoch": int(config.epochs * config.freeze_bn_after),
                         "observers_off_after_epoch": max(1, config.epochs - 1), "history": history,
                         "train_data": qdata.description.get("calibration", {}).get("source")}
        record["settings"] = pt2e.describe(True, resolved["reduce_range"])
        if config.engine == "torchao":
            path = work / "model.pt2"
            pt2e.save_pt2(converted, spec, path)
            judge("qat-pt2e", _torch_logits(converted, spec, qdata.eval_x))
            return path, "pt2"
        path = work / "model.onnx"
        pt2e.export_onnx(converted, spec, path)
        judge("qat-onnx", run_model(path, qdata.eval_x, "onnxruntime", spec=spec, threads=config.threads))
        return path, "onnx"
    path = work / "model.onnx"
    if config.mode == "dynamic":
        pre = work / "pre.onnx"
        record.update(ort_ptq.preprocess(fp32_path, pre))
        record["settings"] = dynamic.quantize_dynamic(pre, path, config.per_channel, resolved["reduce_range"],
                                                      resolved["weight_type"], config.nodes_to_exclude)
    else:
        record["settings"] = dynamic.convert_fp16(fp32_path, path)
    judge(config.mode, run_model(path, qdata.eval_x, "onnxruntime", spec=spec, threads=config.threads))
    return path, "onnx"


def _summary(loaded: LoadedModel, config: QuantConfig, record: dict[str, Any], chosen: bud.Attempt | None,
             fp32_path: Path | None, candidate: Path, start: float) -> dict[str, Any]:
    base = fp32_path.stat().st_size if fp32_path is not None else _torch_bytes(loaded)
    after = candidate.stat().st_size
    float_nodes = list(record.get("float_nodes_base", [])) + (chosen.float_nodes if chosen else [])
    return {
        "model": loaded.name, "mode": config.mode, "engine": config.engine,
        "backend": config.engine,  # the key's old name, kept for scripts that read it
        "precision": "fp16" if config.mode == "fp16" else "int8",
        "config": config.to_dict(), **record,
        "size": {"fp32_bytes": base, "quantized_bytes": after, "ratio": round(base / max(after, 1), 3)},
        "size_fp32_mb": round(base / 1e6, 4), "size_mb": round(after / 1e6, 4),
        "size_ratio": round(base / max(after, 1), 3),
        "parity": chosen.metrics if chosen else None,
        "float_nodes": float_nodes,
        "float_nodes_why": _why(record, chosen),
        "elapsed_s": round(time.perf_counter() - start, 2),
    }


def _why(record: dict[str, Any], chosen: bud.Attempt | None) -> dict[str, str]:
    why = {n: "ViT preset: attention MatMul between activations stays float"
           for n in record.get("float_nodes_base", [])}
    why.update({n: "requested (--exclude)" for n in record.get("float_nodes_user", [])})
    sqnr = {s["node"]: s["weight_sqnr_db"] for s in (record.get("sensitivity") or [])}
    for node in (chosen.float_nodes if chosen else []):
        if node not in sqnr:
            why[node] = "kept float with the float layer it feeds through a Relu/Clip (ORT folds those into Q)"
            continue
        why[node] = (f"budget fallback: most sensitive layer (model output SQNR {sqnr.get(node, '?')} dB with only "
                     "its weights in INT8)")
    return why


def _torch_bytes(loaded: LoadedModel) -> int:
    if loaded.module is None:
        return 0
    return int(sum(p.numel() * p.element_size() for p in loaded.module.state_dict().values()))


def _parity_entry(chosen: bud.Attempt | None, budget: Thresholds) -> dict[str, Any]:
    metrics = dict(chosen.metrics) if chosen else {}
    return {**metrics, "thresholds": budget.to_dict(), "passed": bool(chosen and chosen.passed),
            "reference": "fp32 source model", "data": "held-out (validation split or evaluation crops)",
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


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
