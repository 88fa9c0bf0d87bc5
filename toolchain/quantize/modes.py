"""The quantization modes, each producing a model file and the Candidates it judged.

- ONNX static PTQ: vtool's steps (ptq.py) and the speed-weighing fallback (search.py);
- torchao PT2E PTQ (.pt2), QAT (labels or distillation from fp32), ONNX Runtime dynamic, fp16.
Every candidate is judged by the same function (stage.Judge): Runners on the held-out images,
compare.Thresholds for the verdict, exactly the code path `vtool parity` uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.models import LoadedModel
from toolchain.quantize import prep
from toolchain.quantize.calib import HashingBatches, QuantData
from toolchain.quantize.config import IntSettings, QatSettings, QuantConfig
from toolchain.quantize.search import Candidate, SearchOutcome, macs_share, run_search

log = logging.getLogger(__name__)

Judge = Callable[..., Candidate]


@dataclass
class ModeResult:
    """The chosen model file, its format, what was tried and what the manifest should record."""

    path: Path
    format: str
    outcome: SearchOutcome
    record: dict[str, Any] = field(default_factory=dict)


def onnx_ptq(fp32: Path, data: QuantData, config: QuantConfig, ints: IntSettings, work: Path, judge: Judge,
             speed: Callable[[Path], float | None], qat: QatSettings | None = None) -> ModeResult:
    """vtool's static PTQ on the fp32 ONNX graph, with the float fallback; on transformers the fused candidate first.

    With `qat`, the all-INT8 model is fine-tuned by distillation (QAT from PTQ) before the fallback runs.
    """
    from toolchain.quantize import sensitivity
    from toolchain.quantize.ptq import StaticPtq

    search = config.search()
    fused, fusion_record = fused_dynamic(fp32, data, config, ints, work, judge, speed) if qat is None else (None, {})
    if fused is not None and fused.passed:
        return ModeResult(fused.path, "onnx", SearchOutcome(fused, [fused]), fusion_record)
    pre = work / "pre.onnx"
    record: dict[str, Any] = dict(prep.preprocess(fp32, pre))
    ptq = StaticPtq(pre, data.spec, data, config.calibration_settings(), ints, config.steps(), work, config.threads)
    ptq.prepare()
    ptq.calibrate()
    ptq.refit()
    qat_record = ptq.finetune(qat) if qat is not None else None
    layers = ptq.layers()

    def build(float_layers: list[str], tag: str) -> Path:
        return ptq.build(list(search.exclude) + float_layers, tag)

    def judged(step: str, path: Path, float_layers: list[str]) -> Candidate:
        candidate = judge(step, path, list(search.exclude) + float_layers)
        candidate.calibration = config.calibration
        candidate.float_macs_share = macs_share(layers, candidate.float_layers)
        return candidate

    def rank() -> list[tuple[str, float]]:
        probe = next(iter(data.calibration()))[:16].astype(np.float32)
        candidates = [layer for layer in layers if layer.name not in search.exclude]
        return sensitivity.rank(ptq.graph, candidates, ptq.weights, ptq.ranges, probe, data.spec, work,
                                config.threads)

    outcome = run_search(build, judged, rank, speed, ptq.graph, search.max_float_nodes, search.min_speedup,
                         search.enabled)
    record.update(ptq.describe())
    record["sensitivity"] = outcome.sensitivity
    record["search"] = {"stopped": outcome.stopped, "min_speedup": search.min_speedup,
                        "max_float_nodes": search.max_float_nodes}
    record["float_nodes_base"] = ptq.base_exclude
    record["float_nodes_user"] = list(search.exclude)
    record["layers_total"] = len(layers)
    record["calibration_set"] = ptq.calibration_info
    if qat_record is not None:
        record["qat"] = {**qat_record, "train_data": ptq.calibration_info.get("source")}
    if fused is not None:  # tried first and failed: keep it in the attempts table
        outcome.candidates.insert(0, fused)
        record["fusion"] = fusion_record.get("fusion")
    return ModeResult(outcome.chosen.path, "onnx", outcome, record)


def fused_dynamic(fp32: Path, data: QuantData, config: QuantConfig, ints: IntSettings, work: Path, judge: Judge,
                  speed: Callable[[Path], float | None]) -> tuple[Candidate | None, dict[str, Any]]:
    """Transformer fusion (fusion.py) + dynamic INT8 of MatMul/Gemm/Attention, judged and timed like any candidate.

    Measured on vit-tiny (digits): fused dynamic INT8 ran 1.7-2.3x fp32 ONNX Runtime where static QDQ, whose
    attention stays float between Q/DQ pairs, ran 1.1-1.6x. Passes only within budget AND above --min-speedup.
    """
    from toolchain.quantize import dynamic, fusion
    from toolchain.quantize.graph import OnnxGraph

    if config.fuse_transformer == "off":
        return None, {}
    source = OnnxGraph.load(fp32)
    if config.fuse_transformer == "auto" and not source.is_transformer(config.preset):
        return None, {}
    probe = next(iter(data.calibration()))[:8].astype(np.float32)
    fused_fp32 = work / "fused.onnx"
    report = fusion.fuse_transformer(fp32, fused_fp32, probe, data.spec, config.threads)
    record: dict[str, Any] = {"fusion": report.to_dict()}
    if report.attention_fused == 0:
        log.info("transformer fusion: no attention block fused (%s); static QDQ only",
                 "; ".join(report.skipped[:2]) or "no Softmax in the graph")
        return None, record
    if report.max_abs_diff is None or report.max_abs_diff > fusion.FUSED_ATOL:
        log.warning("transformer fusion changed fp32 logits by %s (> %g); not used", report.max_abs_diff,
                    fusion.FUSED_ATOL)
        return None, record
    log.info("transformer fusion: %d of %d attention blocks fused (fp32 max diff %.2e)", report.attention_fused,
             report.attention_blocks, report.max_abs_diff)
    path = work / "int8-fused-dynamic.onnx"
    settings = dynamic.quantize_dynamic(fused_fp32, path, ints.per_channel, ints.reduce_range, "int8",
                                        list(config.nodes_to_exclude), op_types=dynamic.FUSED_OP_TYPES)
    graph = OnnxGraph.load(fused_fp32)
    weighted = [n for n in graph.model.graph.node if n.op_type in ("Conv", *dynamic.FUSED_OP_TYPES)]
    float_layers = [n.name for n in weighted if n.op_type == "Conv" or n.name in config.nodes_to_exclude]
    candidate = judge("fused-dynamic", path, float_layers)
    candidate.calibration = "dynamic (run time)"
    candidate.float_macs_share = macs_share(source.layers(), float_layers)  # unfused: all MACs
    candidate.speedup = speed(path)
    if candidate.speedup is not None and candidate.speedup < config.min_speedup:
        candidate.failures.append(f"{candidate.speedup:.2f}x fp32 speed < --min-speedup {config.min_speedup:g}")
    record.update({"settings": settings, "runtimes": ["onnxruntime"], "layers_total": len(weighted),
                   "float_reasons": {n: "dynamic INT8 leaves Conv float (ConvInteger is slower than fp32 here)"
                                     for n in float_layers if n not in config.nodes_to_exclude}})
    return candidate, record


def torchao_ptq(loaded: LoadedModel, data: QuantData, ints: IntSettings, work: Path, judge: Judge) -> ModeResult:
    from toolchain.quantize import pt2e

    batches = HashingBatches(data)
    converted = pt2e.ptq(loaded.module, data.spec, batches, ints.reduce_range)
    path = work / "model.pt2"
    pt2e.save_pt2(converted, data.spec, path)
    record = {"calibration_set": {**data.description.get("calibration", {}), **batches.finish()},
              "settings": pt2e.describe(False, ints.reduce_range)}
    candidate = judge("torchao-pt2e", path, [], runner="pt2")
    return ModeResult(path, "pt2", SearchOutcome(candidate, [candidate]), record)


def qat(loaded: LoadedModel, data: QuantData, config: QuantConfig, ints: IntSettings, work: Path,
        judge: Judge, fp32: Path | None = None, speed: Callable[[Path], float | None] | None = None) -> ModeResult:
    """QAT from vtool's PTQ model (distillation, fp32 ONNX given) or through torchao PT2E: on labels
    (cross-entropy) or, without labels, distilled from the fp32 model."""
    from toolchain.quantize import pt2e

    settings = config.qat()
    if fp32 is not None and speed is not None:
        from toolchain.errors import UserInputError
        from toolchain.quantize.graph import OnnxGraph
        from toolchain.quantize.qdqtorch import unsupported

        graph = OnnxGraph.load(fp32)
        missing = unsupported(graph.op_types())
        if settings.start == "ptq" and missing:
            raise UserInputError(f"QAT from PTQ cannot run ONNX op(s) {', '.join(missing[:5])} of this graph; use "
                                 "--qat-start observers (torchao PT2E QAT).")
        if not missing and (settings.start == "ptq" or not graph.is_transformer(config.preset)):
            pt2e.refuse_torchrun()
            return onnx_ptq(fp32, data, config, ints, work, judge, speed, qat=settings)
        reason = ("a transformer graph" if not missing else
                  f"ops the torch copy of the INT8 graph cannot run ({', '.join(missing[:3])})")
        if not loaded.is_torch:
            raise UserInputError(f"QAT on '{loaded.name}' (an ONNX file): {reason}, and torchao QAT needs the PyTorch "
                                 "checkpoint; pass it, or use --mode ptq.")
        log.info("QAT: %s; --qat-start auto trains torchao observers", reason)
    distill = settings.distill == "on" or (settings.distill == "auto" and data.bundle is None)
    if distill:
        converted, history = pt2e.qat_distill(loaded.module, data.spec, data.calibration, settings,
                                               ints.reduce_range, seed=config.seed)
        source = data.description.get("calibration", {}).get("source")
    else:
        converted, history = pt2e.qat(loaded.module, data.spec, data.bundle, settings.epochs, settings.lr,
                                      ints.reduce_range, settings.freeze_bn_after, seed=config.seed,
                                      augment=settings.augment)
        source = data.bundle.samples.source
    record = {"qat": {"epochs": settings.epochs, "lr": settings.lr, "optimizer": "Adam + cosine",
                      "loss": "distillation: MSE to the fp32 logits" if distill else "cross-entropy on labels",
                      "augment": settings.augment, "freeze_bn_after_epoch": int(settings.epochs *
                                                                                settings.freeze_bn_after),
                      "observers_off_after_epoch": max(1, settings.epochs - 1), "history": history,
                      "train_data": source},
              "settings": pt2e.describe(True, ints.reduce_range)}
    if config.engine == "torchao":
        path = work / "model.pt2"
        pt2e.save_pt2(converted, data.spec, path)
        candidate = judge("qat-pt2e", path, [], runner="pt2")
        return ModeResult(path, "pt2", SearchOutcome(candidate, [candidate]), record)
    path = work / "model.onnx"
    pt2e.export_onnx(converted, data.spec, path)
    candidate = judge("qat-onnx", path, [])
    return ModeResult(path, "onnx", SearchOutcome(candidate, [candidate]), record)


def dynamic_or_fp16(fp32: Path, config: QuantConfig, ints: IntSettings, work: Path, judge: Judge) -> ModeResult:
    from toolchain.quantize import dynamic

    path = work / "model.onnx"
    record: dict[str, Any] = {}
    if config.mode == "dynamic":
        pre = work / "pre.onnx"
        record.update(prep.preprocess(fp32, pre))
        record["settings"] = dynamic.quantize_dynamic(pre, path, ints.per_channel, ints.reduce_range,
                                                      ints.weight_type, config.nodes_to_exclude)
    else:
        record["settings"] = dynamic.convert_fp16(fp32, path)
    candidate = judge(config.mode, path, [])
    return ModeResult(path, "onnx", SearchOutcome(candidate, [candidate]), record)
