"""`vtool quantize --engine xnnpack`: PT2E with ExecuTorch's XNNPACKQuantizer, lowered to an INT8 `.pte`.

Activations int8 per-tensor affine (HistogramObserver, whose range search minimises the L2 error of the
quantized histogram, for --calibration mse (the default) or entropy; MinMaxObserver for minmax), weights
int8 symmetric per-channel. PTQ calibrates on the stage's calibration batches; QAT fine-tunes
with fake quantization (the torchao engine's recipe: observers off for the last epoch, BatchNorm frozen
after a fraction of the epochs).
The converted graph is exported with a dynamic batch (1..64) and lowered with XnnpackPartitioner.

XNNPACK's signed-int8 kernels widen to 16/32 bits before multiply-adding, so the AVX2 (non-VNNI)
saturation that needs 7-bit weights on ONNX Runtime does not arise: reduce_range stays off unless
asked for (then weights use [-63, 63]).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import ExportError, UserInputError
from toolchain.export.pte import DEFAULT_MAX_BATCH, BatchPlan, export_programs, lower, require
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)

ACTIVATION_OBSERVERS = {"mse": "HistogramObserver", "minmax": "MinMaxObserver", "entropy": "HistogramObserver"}


@dataclass
class XnnpackSettings:
    """How XNNPACKQuantizer quantizes: per-channel weights, 7-bit weights (reduce_range), QAT, batch bound."""

    per_channel: bool = True
    reduce_range: bool = False
    is_qat: bool = False
    calibration: str = "minmax"  # activation observer for PTQ: minmax, or mse/entropy (histogram L2 range search)
    max_batch: int = DEFAULT_MAX_BATCH

    def __post_init__(self) -> None:
        if self.calibration not in ACTIVATION_OBSERVERS:
            raise UserInputError(
                f"--calibration {self.calibration} is not available with --engine xnnpack; use "
                f"{' or '.join(ACTIVATION_OBSERVERS)} (mse/entropy: the histogram L2 range search)."
            )
        if self.max_batch < 2:
            raise UserInputError(f"max_batch must be >= 2 for a dynamic batch, got {self.max_batch}.")

    def quantizer(self) -> Any:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

        weights = (-63, 63) if self.reduce_range else (-127, 127)
        config = get_symmetric_quantization_config(is_per_channel=self.per_channel, is_qat=self.is_qat,
                                                   weight_qmin=weights[0], weight_qmax=weights[1])
        if not self.is_qat:  # XNNPACK's default PTQ observer is the histogram one; minmax swaps it in
            import dataclasses

            import torchao.quantization.pt2e as observers

            ctr = getattr(observers, ACTIVATION_OBSERVERS[self.calibration]).with_args(eps=2**-12)
            act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=ctr)
            config = dataclasses.replace(config, input_activation=act, output_activation=act)
        return _clamp_aware_quantizer()().set_global(config)

    def describe(self) -> dict[str, Any]:
        weights = "[-63, 63] (reduce_range)" if self.reduce_range else "[-127, 127]"
        return {"quantizer": "executorch XNNPACKQuantizer (torchao PT2E), conv/linear + ReLU6 fused", **asdict(self),
                "activations": f"int8 per-tensor affine, {ACTIVATION_OBSERVERS[self.calibration]}"
                if not self.is_qat else "int8 per-tensor affine, fake-quantized during training",
                "weights": f"int8 {'per-channel' if self.per_channel else 'per-tensor'} symmetric {weights}",
                "delegate": "XNNPACK", "batch": BatchPlan((), self.max_batch).describe()}


def fuse_clamp_annotations(model: Any) -> int:
    """Give a ReLU6 (hardtanh) that directly follows a conv/linear the output quantization of that op.

    XNNPACKQuantizer 1.5.1 fuses conv+ReLU but not conv+ReLU6: it observes the conv's pre-clamp output
    (EfficientNet-Lite0: ranges up to +-100) and the clamp shares that observer, so the [0, 6] values that
    matter get a step of ~0.8. XNNPACK itself fuses hardtanh into conv/linear (their `fused_acts`), so the
    clamp's output is where the quantization belongs: Lite0's INT8 agreement went from 0.52 to 0.98 (eager).
    """
    import torch
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    key = "quantization_annotation"
    clamps = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)  # nn.ReLU6
    # conv/linear; under QAT the BatchNorm after a conv (folded into it at convert) carries the output annotation
    sources = (torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.linear.default,
               torch.ops.aten.batch_norm.default)
    fused = 0
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in clamps or key in node.meta:
            continue
        source = node.args[0]
        annotation = getattr(source, "meta", {}).get(key)
        if (getattr(source, "target", None) in sources and annotation is not None
                and annotation.output_qspec is not None and len(source.users) == 1):
            node.meta[key] = QuantizationAnnotation(input_qspec_map={}, output_qspec=annotation.output_qspec,
                                                    _annotated=True)
            annotation.output_qspec = None
            fused += 1
    return fused


def _clamp_aware_quantizer() -> type:
    """XNNPACKQuantizer whose annotation also fuses conv/linear + ReLU6 (see fuse_clamp_annotations)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import propagate_annotation

    class ClampAwareXNNPACKQuantizer(XNNPACKQuantizer):
        def annotate(self, model: Any) -> Any:
            model = self._annotate_for_quantization_config(model)
            fused = fuse_clamp_annotations(model)
            if fused:
                log.info("XNNPACKQuantizer: %d conv/linear + ReLU6 pair(s) quantized after the clamp", fused)
            propagate_annotation(model)
            return model

    return ClampAwareXNNPACKQuantizer


def _graph(module: Any, spec: ModelSpec) -> Any:
    from toolchain.quantize.pt2e import export_graph

    return export_graph(copy.deepcopy(module), spec)


def ptq(module: Any, spec: ModelSpec, batches: Iterable[np.ndarray], settings: XnnpackSettings) -> Any:
    """prepare_pt2e -> calibration batches through the observers -> convert_pt2e (an INT8 graph module)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    require("executorch", "--engine xnnpack")
    try:
        prepared = prepare_pt2e(_graph(module, spec), settings.quantizer())
    except Exception as exc:  # noqa: BLE001 - torchao raises plain errors on unsupported patterns
        raise ExportError(f"XNNPACKQuantizer could not prepare {spec.architecture}: {str(exc)[:200]}") from None
    with torch.no_grad():
        for batch in batches:
            prepared(torch.from_numpy(batch))
    return convert_pt2e(prepared)


def qat(module: Any, spec: ModelSpec, bundle: Any, settings: XnnpackSettings, epochs: int, lr: float,
        freeze_bn_after: float = 0.5, batch_size: int = 64, seed: int = 0,
        augment: bool = False) -> tuple[Any, list[dict[str, Any]]]:
    """Fake-quantized fine-tuning on the bundle's train split; returns the INT8 graph and per-epoch figures."""
    import torch
    from torchao.quantization.pt2e import disable_observer, move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    from toolchain.quantize.pt2e import _freeze_batchnorm

    require("executorch", "--engine xnnpack")
    torch.manual_seed(seed)
    try:
        prepared = prepare_qat_pt2e(_graph(module, spec), settings.quantizer())
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"XNNPACKQuantizer could not prepare {spec.architecture} for QAT: {str(exc)[:200]}") from None
    optimizer = torch.optim.Adam(prepared.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    freeze_bn_epoch, observer_off_epoch = math.floor(epochs * freeze_bn_after), max(1, epochs - 1)
    history: list[dict[str, Any]] = []
    for epoch in range(epochs):
        if epoch >= observer_off_epoch:
            prepared.apply(disable_observer)
        move_exported_model_to_train(prepared)
        if epoch >= freeze_bn_epoch:
            _freeze_batchnorm(prepared)
        total, correct, loss_sum = 0, 0, 0.0
        for x, y in bundle.loader("train", batch_size=batch_size, shuffle=True, augment=augment, seed=seed + epoch):
            optimizer.zero_grad()
            out = prepared(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((out.argmax(1) == y).sum())
            total += len(y)
        scheduler.step()
        history.append({"epoch": epoch + 1, "loss": loss_sum / max(total, 1), "train_acc": correct / max(total, 1),
                        "observers": epoch < observer_off_epoch, "bn_frozen": epoch >= freeze_bn_epoch})
        log.info("XNNPACK QAT epoch %d/%d: loss %.4f, train acc %.4f", epoch + 1, epochs, history[-1]["loss"],
                 history[-1]["train_acc"])
    move_exported_model_to_eval(prepared)
    return convert_pt2e(prepared), history


def lower_int8(converted: Any, spec: ModelSpec, settings: XnnpackSettings) -> tuple[bytes, dict[str, Any]]:
    """The converted INT8 graph as an XNNPACK-delegated `.pte` (dynamic batch 1..max_batch)."""
    import torch

    plan = BatchPlan((), settings.max_batch)
    example = torch.randn(spec.input_shape(2), generator=torch.Generator().manual_seed(0))
    try:
        programs = export_programs(converted, example, plan)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"torch.export of the INT8 {spec.architecture} failed: {str(exc)[:200]}") from None
    buffer, details = lower(programs, f"INT8 {spec.architecture}")
    return buffer, {**details, "batch": plan.describe()}


def run(loaded: Any, qdata: Any, config: Any, work: Path, judge: Callable[..., Any]) -> Any:
    """The stage's branch for --engine xnnpack: quantize, lower, judge the `.pte` on ExecuTorch."""
    from toolchain.quantize.calib import HashingBatches
    from toolchain.quantize.modes import ModeResult
    from toolchain.quantize.search import SearchOutcome

    settings = XnnpackSettings(per_channel=config.per_channel, reduce_range=bool(config.reduce_range),
                               is_qat=config.mode == "qat", calibration=config.calibration)
    record: dict[str, Any] = {}
    if config.mode == "qat":
        qat_settings = config.qat()
        converted, history = qat(loaded.module, loaded.spec, qdata.bundle, settings, qat_settings.epochs,
                                 qat_settings.lr, qat_settings.freeze_bn_after, seed=config.seed,
                                 augment=qat_settings.augment)
        record["qat"] = {"epochs": qat_settings.epochs, "lr": qat_settings.lr, "optimizer": "Adam + cosine",
                         "history": history, "train_data": qdata.description.get("calibration", {}).get("source")}
    else:
        batches = HashingBatches(qdata)
        converted = ptq(loaded.module, loaded.spec, batches, settings)
        record["calibration_set"] = {**qdata.description.get("calibration", {}), **batches.finish()}
    buffer, lowered = lower_int8(converted, loaded.spec, settings)
    path = work / "model.pte"
    path.write_bytes(buffer)
    record["settings"] = settings.describe()
    record["pte"] = lowered
    candidate = judge(f"xnnpack-{config.mode}", path, [], runner="executorch")
    return ModeResult(path, "executorch", SearchOutcome(candidate, [candidate]), record)
