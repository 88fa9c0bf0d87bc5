"""Static INT8 PTQ on an ONNX graph, as a chain of switchable steps recorded in the manifest.

prepare (transformer fusion, cross-layer equalization) -> calibrate (one fp32 pass: activation
histograms + per-layer input statistics) -> activation ranges (mse / minmax / percentile / entropy)
-> integer weights (GPTQ layer-wise reconstruction or round-to-nearest) -> bias correction ->
build(float_layers): ORT's QDQ quantizer places the nodes, vtool's numbers go in (emit.py).
`build` can be called many times (different layers kept float) without calibrating again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.quantize import capture, emit, gptq
from toolchain.quantize.calib import HashingBatches, QuantData
from toolchain.quantize.config import (
    PAIR_LIMIT,
    CalibrationSettings,
    IntSettings,
    PtqSteps,
    QatSettings,
    WeightRange,
)
from toolchain.quantize.graph import Layer, OnnxGraph, from_matrix, weight_matrix
from toolchain.quantize.ranges import choose_range
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)

VIT_OP_TYPES = ["MatMul", "Gemm", "Conv"]
STREAM_ALPHA = 0.0  # off by default: alpha 0.5 cost 1.2 dB on EfficientNet-Lite0 (24.3 -> 23.1 dB)


@dataclass
class StepRecord:
    """What one step did (or why it did not apply): goes into the manifest's quantization.steps."""

    step: str
    applied: bool
    note: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "applied": self.applied, "note": self.note, **self.figures,
                "seconds": round(self.seconds, 2)}


class StaticPtq:
    """One fp32 graph, calibrated once, from which INT8 candidates are built."""

    def __init__(self, fp32: Path, spec: ModelSpec, data: QuantData, calibration: CalibrationSettings,
                 ints: IntSettings, steps: PtqSteps, workdir: Path, threads: int | None = None) -> None:
        self.spec, self.data, self.calib, self.ints, self.steps = spec, data, calibration, ints, steps
        self.workdir, self.threads = workdir, threads
        self.source = fp32
        self.graph = OnnxGraph.load(fp32)
        self.transformer = self.graph.is_transformer(steps.preset)
        self.op_types = list(VIT_OP_TYPES) if self.transformer else None
        self.records: list[StepRecord] = []
        self.ranges: dict[str, tuple[float, float]] = {}
        self.weights: dict[str, emit.IntWeight] = {}
        self.refined_biases: dict[str, np.ndarray] = {}  # INT8 layers only: float layers keep the fp32 bias
        self.layer_errors: dict[str, float] = {}
        self.base_exclude: list[str] = []
        self.calibration_info: dict[str, Any] = {}
        self.stats: capture.Calibration | None = None
        self.prepared = fp32

    # ------------------------------------------------------------------ steps
    def _record(self, step: str, applied: bool, note: str = "", started: float | None = None, **figures: Any) -> None:
        seconds = time.perf_counter() - started if started is not None else 0.0
        self.records.append(StepRecord(step, applied, note, figures, seconds))
        log.info("%s: %s%s", step, "applied" if applied else "skipped", f" ({note})" if note else "")

    def layers(self) -> list[Layer]:
        layers = self.graph.layers()
        if self.op_types:
            layers = [layer for layer in layers if layer.op in self.op_types]
        return layers

    def prepare(self) -> None:
        """Graph-level steps before calibration: the transformer preset, SmoothQuant, cross-layer equalization."""
        from toolchain.quantize import cle, transformer

        if self.transformer:
            self.base_exclude += transformer.activation_matmuls(self.graph)
            self._record("transformer-preset", True, f"{len(self.base_exclude)} attention MatMuls between two "
                         "activations stay float; LayerNorm/Softmax/GELU stay float")
        self._smoothquant(transformer)
        self._equalize_streams()
        started = time.perf_counter()
        applied, note, figures = cle.equalize(self.graph, self.steps.cle, self.ints.per_channel)
        if applied:
            pairs, _ = cle.equalizable_pairs(self.graph)
            relu_pairs = [p for p in pairs if p[2] == ["Relu"]]
            minima = self._channel_stats([p[0].output for p in relu_pairs], "min") if relu_pairs else {}
            figures["high_bias_absorbed"] = cle.absorb_high_biases(self.graph, relu_pairs, minima)
        self._record("cross-layer-equalization", applied, note, started, **figures)
        self.prepared = self.graph.save(self.workdir / "prepared.onnx")

    def _smoothquant(self, transformer: Any) -> None:
        alpha = self.steps.smoothquant
        if alpha is None:
            alpha = 0.5 if self.transformer else 0.0
        if alpha <= 0.0:
            self._record("smoothquant", False, "off" if self.transformer else "not a transformer graph")
            return
        started = time.perf_counter()
        pairs = transformer.smoothable(self.graph)
        if not pairs:
            self._record("smoothquant", False, "no LayerNormalization -> MatMul/Gemm groups in this graph")
            return
        maxima = self._channel_stats([norm.output[0] for norm, _ in pairs], "absmax")
        done = transformer.smooth(self.graph, alpha, maxima)
        self._record("smoothquant", done > 0, f"alpha {alpha}: {done} LayerNorm -> linear groups rescaled", started,
                     groups=done, alpha=alpha)

    def _equalize_streams(self) -> None:
        from toolchain.quantize import streams

        alpha = self.steps.stream_alpha
        if alpha is None:
            alpha = 0.0 if self.transformer else STREAM_ALPHA
        if alpha <= 0.0:
            self._record("stream-equalization", False, "off (--stream-alpha 0.5 to enable)")
            return
        started = time.perf_counter()
        found = streams.find_streams(self.graph)
        if not found:
            self._record("stream-equalization", False, "no Conv-written, Conv-read linear streams in this graph")
            return
        maxima = self._channel_stats(sorted({t for s in found for t in s.tensors}), "absmax_c")
        figures = streams.equalize_streams(self.graph, found, maxima, alpha)
        self._record("stream-equalization", True, f"alpha {alpha}: {figures['streams']} streams "
                     f"({figures['tensors']} tensors) rescaled per channel", started, **figures)

    def _channel_stats(self, tensors: list[str], kind: str, images: int = 64) -> dict[str, np.ndarray]:
        """Per-channel max |x| (last axis) or minimum (axis 1, NCHW) of fp32 tensors over a few calibration images."""
        from toolchain.runners import get_runner

        path = self.graph.save(self.workdir / "probe-stats.onnx")
        result: dict[str, np.ndarray] = {}
        seen = 0
        with get_runner("onnxruntime", path, spec=self.spec, threads=self.threads, graph_optimization="disable",
                        expose_outputs=tensors) as runner:
            for batch in self.data.calibration():
                values = runner.run_outputs(np.ascontiguousarray(batch[: images - seen], np.float32), tensors)
                for name, value in values.items():
                    if kind in ("absmax", "absmax_c"):
                        moved = value if kind == "absmax" else np.moveaxis(value, 1, -1)
                        stat = np.abs(moved.reshape(-1, moved.shape[-1])).max(axis=0)
                        result[name] = np.maximum(result.get(name, stat), stat)
                    else:
                        stat = np.moveaxis(value, 1, 0).reshape(value.shape[1], -1).min(axis=1)
                        result[name] = np.minimum(result.get(name, stat), stat)
                seen += len(batch[: images - seen])
                if seen >= images:
                    break
        return result

    def calibrate(self) -> None:
        """One fp32 pass, then ranges, integer weights and bias correction."""
        started = time.perf_counter()
        layers = self.layers()
        tensors = capture.tensors_to_calibrate(self.graph, self.op_types)
        batches = HashingBatches(self.data)
        recon = self.calib.recon_samples if self.steps.reconstruction == "gptq" or self.steps.bias_correction else 0
        stats = capture.calibrate(self.prepared, self.graph, self.spec, batches, layers, tensors, recon,
                                  self.threads, self.calib.seed)
        self.stats = stats
        self.calibration_info = {**self.data.description.get("calibration", {}), **batches.finish()}
        self._record("calibrate", True, f"{stats.images} images, {len(tensors)} activation tensors, "
                     f"{len(layers)} weighted layers", started)
        self._choose_ranges(stats)
        self._round_weights(layers, stats)
        self._correct_biases(layers, stats)

    def _choose_ranges(self, stats: capture.Calibration) -> None:
        started = time.perf_counter()
        method = self.calib.method
        if method == "entropy":
            from toolchain.quantize.ranges import ort_ranges

            self.ranges = ort_ranges(self.prepared, self.data, "entropy", self.op_types, self.workdir)
        else:
            self.ranges = {name: choose_range(hist, method, self.calib.percentile)
                           for name, hist in stats.histograms.items()}
        self._record(f"activation-ranges:{method}", True, f"{len(self.ranges)} tensors, uint8 per tensor", started)

    def weight_ranges(self) -> dict[str, WeightRange]:
        """Each layer's weight integers, keyed by its fp32 weight name (IntSettings.weight_range)."""
        return {layer.weight: self.ints.weight_range(layer) for layer in self.layers()}

    def _round_weights(self, layers: list[Layer], stats: capture.Calibration) -> None:
        started = time.perf_counter()
        use_gptq = self.steps.reconstruction == "gptq" and stats.recon_images > 0
        for layer in layers:
            limits = self.ints.weight_range(layer)
            weight = self.graph.array(layer.weight)
            matrix = weight_matrix(layer, weight).astype(np.float64)
            scales = gptq.symmetric_scales(matrix, limits.qmax, limits.pair_stride(layer))
            if use_gptq:
                hessian = stats.stats[layer.name].hessian()
                ints = gptq.gptq_round(matrix, hessian, scales, limits.qmax, pair_stride=limits.pair_stride(layer))
                self.layer_errors[layer.name] = gptq.relative_error(matrix, ints * scales[:, None], hessian)
            else:
                ints = gptq.round_to_nearest(matrix, scales, limits.qmax, limits.pair_stride(layer))
            self.weights[layer.weight] = emit.IntWeight(from_matrix(layer, ints, weight.shape), scales)
        name = "weights:gptq" if use_gptq else "weights:round-to-nearest"
        note = (f"per-channel symmetric, {self._range_summary(layers)}"
                + (f", layer-wise reconstruction on {stats.recon_images} images" if use_gptq else ""))
        figures = {}
        if self.layer_errors:
            worst = min(self.layer_errors.items(), key=lambda kv: -kv[1])
            figures = {"worst_layer": worst[0], "worst_layer_sqnr_db": round(-10 * np.log10(max(worst[1], 1e-30)), 2)}
        self._record(name, True, note, started, **figures)

    def _range_summary(self, layers: list[Layer]) -> str:
        ranges = [self.ints.weight_range(layer) for layer in layers]
        paired = sum(r.paired for r in ranges)
        plain8 = sum(r.qmax == 127 and not r.paired for r in ranges)
        if not paired and plain8 in (0, len(ranges)):
            return f"|q| <= {ranges[0].qmax if ranges else self.ints.weight_qmax}"
        def n(count: int, what: str) -> str:
            return f"{count} {what}{'' if count == 1 else 's'}"

        return (f"{n(plain8, 'depthwise layer')} |q| <= 127, {n(paired, 'layer')} |q| <= 127 with |q[2i]| + "
                f"|q[2i+1]| <= {PAIR_LIMIT} over input-channel pairs (AVX2's int16 pair sums cannot saturate), "
                f"{n(len(ranges) - paired - plain8, 'layer')} |q| <= {self.ints.weight_qmax}")

    def refit(self) -> None:
        """Refit each layer on the all-INT8 model's own inputs, in graph order (refine.py)."""
        from toolchain.quantize import refine

        mode = self.steps.refit
        images = min(self.calib.recon_samples, self.stats.images if self.stats else 0)
        reason = ("off" if mode == "off" else
                  "auto: not on transformer graphs (--refit on to force)" if mode == "auto" and self.transformer else
                  "needs per-channel weights" if not self.ints.per_channel else
                  "--bias-correction is on (the refit corrects biases itself)" if self.steps.bias_correction else
                  f"needs >= {2 * refine.CHUNK} calibration images for reconstruction, has {images}"
                  if images < 2 * refine.CHUNK else "")
        if reason:
            self._record("weights:refit", False, reason)
            return
        started = time.perf_counter()
        layers = self.layers()
        log.info("weights:refit: refitting %d layers one at a time on the INT8 model's inputs (%d images)",
                 len(layers), images)
        qdq = self.build([], "refit")
        results = refine.refit_sequential(self.graph, self.prepared, qdq, self.spec, layers,
                                          self.data.calibration, images, self.weight_ranges(),
                                          self.weights, self.refined_biases, self.threads, self.calib.seed)
        kept = [r for r in results if r.kept]
        gain = [r.error_before / max(r.error_after, 1e-30) for r in kept]
        self._record("weights:refit", bool(kept), f"{len(kept)} of {len(results)} layers refit on INT8 inputs "
                     "(each kept only where it lowers the output error on the held-out half of "
                     f"{images} images)", started, layers_refit=len(kept), layers_tried=len(results),
                     median_error_ratio=round(float(np.median(gain)), 3) if gain else None)

    def finetune(self, settings: QatSettings) -> dict[str, Any]:
        """QAT from this PTQ: distil fp32's logits into the INT8 model (finetune.py), kept if held-out loss drops."""
        import onnx

        from toolchain.quantize import finetune, qdqtorch
        from toolchain.runners import run_model

        started = time.perf_counter()
        images = np.concatenate([np.asarray(b, np.float32) for b in self.data.calibration()])
        sources = np.tile(self.data.source_ids(len(images)), 2)
        images = np.concatenate([images, images[..., ::-1]])  # mirrored copies: fp32 labels them too
        qdq = self.build([], "qat-start")
        teacher_logits = run_model(self.prepared, images, "onnxruntime", spec=self.spec, threads=self.threads)
        student = run_model(qdq, images[:finetune.FIDELITY_IMAGES], "onnxruntime", spec=self.spec,
                            threads=self.threads)
        log.info("QAT from PTQ: distilling fp32 logits into the INT8 model on %d images (%d mirrored), %d epochs",
                 len(images), len(images) // 2, settings.epochs)
        teacher = None
        if settings.feature_weight > 0 or settings.mixup > 0:
            names = qdqtorch.quantized_activations(onnx.load(str(qdq))) if settings.feature_weight > 0 else []
            teacher = finetune.Teacher(self.prepared, self.spec, names, self.threads)
        try:
            result = finetune.distill(qdq, teacher_logits, student, images, self.weight_ranges(), settings.epochs,
                                      settings.step_lr, seed=self.calib.seed, sources=sources, teacher=teacher,
                                      feature_weight=settings.feature_weight, mixup=settings.mixup)
        finally:
            if teacher is not None:
                teacher.close()
        if result.kept:
            for key, (ints, scales) in result.weights.items():
                self.weights[key] = emit.IntWeight(ints, scales)
            self.refined_biases.update(result.biases)
            self.ranges.update({k: v for k, v in result.ranges.items() if k in self.ranges})
        before, after = result.loss_before, result.loss_after
        self._record("qat:distill-from-ptq", result.kept,
                     f"epoch {result.best_epoch} of {settings.epochs} kept: held-out MSE to fp32 logits "
                     f"{before:.4g} -> {after:.4g}" if result.kept else
                     f"no epoch lowered the held-out MSE to fp32 logits ({before:.4g}); the PTQ model is kept",
                     started, held_out_mse_before=round(before, 6), held_out_mse_after=round(after, 6),
                     best_epoch=result.best_epoch, torch_copy_sqnr_db=round(result.fidelity_db, 1))
        return {"epochs": settings.epochs, "lr": settings.step_lr, "lr_unit": "weight quantization steps",
                "bias_lr": finetune.BIAS_LR, "activation_scale_lr": finetune.RANGE_LR,
                "optimizer": "Adam + cosine",
                "loss": "distillation: MSE to the fp32 logits" + (
                    f" + {settings.feature_weight:g} x normalized MSE of every quantized activation to its fp32 value"
                    if settings.feature_weight > 0 else "") + (
                    f", on mixup blends of two training images (Beta({settings.mixup:g}), labelled by fp32 online)"
                    if settings.mixup > 0 else ""),
                "start": "vtool PTQ (all-INT8)", "images": len(images), "source_images": len(np.unique(sources)),
                "held_out": f"every {finetune.HOLDOUT_EVERY}th source image, all its crops",
                "history": result.history, "kept": result.kept, "best_epoch": result.best_epoch}

    def _correct_biases(self, layers: list[Layer], stats: capture.Calibration) -> None:
        """Analytic bias correction (Nagel et al. 2019): b -= (W~ - W) E[x] per output channel."""
        if not self.steps.bias_correction:
            self._record("bias-correction", False, "off (--bias-correction to enable)")
            return
        started = time.perf_counter()
        corrected = 0
        for layer in layers:
            weight = self.graph.array(layer.weight)
            matrix = weight_matrix(layer, weight).astype(np.float64)
            q = self.weights[layer.weight]
            deq = weight_matrix(layer, q.values.astype(np.float64)) * q.scales[:, None]
            mean = stats.stats[layer.name].mean_input()  # (groups, fan-in)
            groups = mean.shape[0]
            shift = np.einsum("grk,gk->gr", (deq - matrix).reshape(groups, -1, matrix.shape[1]), mean).reshape(-1)
            updated = self.graph.add_bias(layer, -shift.astype(np.float32))
            corrected += updated is not None
        self.prepared = self.graph.save(self.workdir / "prepared.onnx")
        self._record("bias-correction", True, f"{corrected} layers, from the mean input of "
                     f"{stats.recon_images} images", started)

    # ------------------------------------------------------------------ candidates
    def build(self, float_layers: list[str], tag: str) -> Path:
        """An INT8 QDQ model with `float_layers` (plus the preset's) left in float."""
        exclude = sorted(set(self.base_exclude) | set(float_layers))
        cache = emit.write_ranges(self.ranges, self.workdir / "ranges.json")
        out = self.workdir / f"int8-{tag}.onnx"
        emit.quantize_qdq(self.prepared, out, cache, per_channel=self.ints.per_channel,
                          reduce_range=self.ints.reduce_range, activation_type=self.ints.activation_type,
                          weight_type=self.ints.weight_type, exclude=exclude, op_types=self.op_types)
        if self.ints.per_channel:
            biases = {layer.bias: self.refined_biases.get(layer.bias, self.graph.array(layer.bias))
                      for layer in self.layers() if layer.bias}
            emit.patch_weights(out, out, self.weights, biases)
        return out

    def describe(self) -> dict[str, Any]:
        return {"steps": [r.to_dict() for r in self.records], "transformer": self.transformer,
                "op_types_to_quantize": self.op_types or "all supported",
                "layers": len(self.layers()), "calibration_set": self.calibration_info,
                "int": {"per_channel": self.ints.per_channel, "reduce_range": self.ints.reduce_range,
                        "activation_type": self.ints.activation_type, "weight_type": self.ints.weight_type,
                        "weight_qmax": self.ints.weight_qmax, "weight_ranges": self._range_summary(self.layers())}}
