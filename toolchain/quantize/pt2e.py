"""PyTorch-native INT8 with torchao PT2E: PTQ (prepare_pt2e) and QAT (prepare_qat_pt2e) + X86InductorQuantizer.

The graph comes from torch.export (strict=True first: it keeps ResNet blocks' ReLUs apart, which
the x86 quantizer needs). PTQ results save as `.pt2` (ExportedProgram); QAT results are also
exported to a QDQ ONNX model through the dynamo exporter, which ONNX Runtime runs in INT8.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import ExportError, first_line
from toolchain.spec import ModelSpec
from toolchain.train import distributed as ddp

log = logging.getLogger(__name__)

MAX_BATCH = 4096


def _example(spec: ModelSpec, batch: int = 2) -> Any:
    import torch

    return torch.randn(spec.input_shape(batch))


def _dynamic_batch() -> tuple[dict[int, Any]]:
    import torch

    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def export_graph(module: Any, spec: ModelSpec) -> Any:
    """torch.export the eval-mode module with a dynamic batch; strict first, then non-strict."""
    import torch

    module = module.eval()
    errors = []
    for strict in (True, False):
        try:
            program = torch.export.export(module, (_example(spec),), dynamic_shapes=_dynamic_batch(), strict=strict)
            return program.module()
        except Exception as exc:  # noqa: BLE001 - report both attempts below
            errors.append(f"strict={strict}: {first_line(exc, 160, first_only=True, typed=True)}")
    raise ExportError(f"torch.export failed for {spec.architecture} ({'; '.join(errors)}); try --engine onnxruntime.")


def x86_quantizer(is_qat: bool, reduce_range: bool) -> Any:
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config(is_qat=is_qat, reduce_range=reduce_range))
    return quantizer


def describe(is_qat: bool, reduce_range: bool) -> dict[str, Any]:
    return {"quantizer": "torchao X86InductorQuantizer", "is_qat": is_qat, "reduce_range": reduce_range,
            "activations": "uint8 per-tensor affine", "weights": "int8 per-channel symmetric"}


def ptq(module: Any, spec: ModelSpec, batches: Iterable[np.ndarray], reduce_range: bool) -> Any:
    """prepare_pt2e -> run calibration batches through the observers -> convert_pt2e."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = export_graph(copy.deepcopy(module), spec)
    try:
        prepared = prepare_pt2e(graph, x86_quantizer(False, reduce_range))
    except Exception as exc:  # noqa: BLE001 - torchao raises plain errors on unsupported patterns
        raise ExportError(f"torchao could not prepare {spec.architecture} for INT8: {str(exc)[:200]}") from None
    with torch.no_grad():
        for batch in batches:
            prepared(torch.from_numpy(batch))
    return convert_pt2e(prepared)


def _freeze_batchnorm(prepared: Any) -> None:
    """Stop BatchNorm statistics updates in an exported QAT graph (training flag is arg 5 of the BN ops)."""
    for node in prepared.graph.nodes:
        if node.op == "call_function" and "batch_norm" in str(node.target) and len(node.args) > 5:
            args = list(node.args)
            args[5] = False
            node.args = tuple(args)
    prepared.recompile()


def _prepare_qat(module: Any, spec: ModelSpec, reduce_range: bool) -> Any:
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    graph = export_graph(copy.deepcopy(module), spec)
    try:
        return prepare_qat_pt2e(graph, x86_quantizer(True, reduce_range))
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"torchao could not prepare {spec.architecture} for QAT: {str(exc)[:200]}") from None


def _train(prepared: Any, epochs: int, lr: float, freeze_bn_after: float,
           batches: Callable[[int], Iterable[tuple[Any, Any]]], loss_fn: Callable[[Any, Any], Any],
           accuracy: bool, net: Any = None, dist: Any = None) -> tuple[Any, list[dict[str, Any]]]:
    """The QAT loop (torchvision's recipe): observers off for the last epoch, BN frozen after a fraction. `net` is
    `prepared` wrapped in DDP inside torchrun (`dist`: sums reduced over the ranks; only rank 0 converts)."""
    import torch
    from torchao.quantization.pt2e import disable_observer, move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    net = prepared if net is None else net
    optimizer = torch.optim.Adam(prepared.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    freeze_bn_epoch = math.floor(epochs * freeze_bn_after)
    observer_off_epoch = max(1, epochs - 1)
    history: list[dict[str, Any]] = []
    bn_frozen = False
    for epoch in range(epochs):
        if epoch >= observer_off_epoch:
            prepared.apply(disable_observer)
        if epoch >= freeze_bn_epoch and not bn_frozen:
            bn_frozen = True
        move_exported_model_to_train(prepared)
        if bn_frozen:
            _freeze_batchnorm(prepared)
        total, correct, loss_sum = 0, 0, 0.0
        for x, target in batches(epoch):
            optimizer.zero_grad()
            out = net(x)
            loss = loss_fn(out, target)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(x)
            if accuracy:
                correct += int((out.argmax(1) == target).sum())
            else:
                correct += int((out.argmax(1) == target.argmax(1)).sum())
            total += len(x)
        scheduler.step()
        if dist is not None:
            loss_sum, correct, total = dist.all_reduce_sum([loss_sum, correct, total])
        history.append({"epoch": epoch + 1, "loss": loss_sum / max(total, 1),
                        ("train_acc" if accuracy else "train_agreement"): correct / max(total, 1),
                        "observers": epoch < observer_off_epoch, "bn_frozen": bn_frozen})
        log.info("QAT epoch %d/%d: loss %.4f, %s %.4f%s%s", epoch + 1, epochs, history[-1]["loss"],
                 "train acc" if accuracy else "agreement with fp32", correct / max(total, 1),
                 ", BN frozen" if bn_frozen else "", ", observers off" if epoch >= observer_off_epoch else "")
    if dist is not None:
        ddp.qat_finish(dist)  # only rank 0 goes on to convert, export and write
    move_exported_model_to_eval(prepared)
    return convert_pt2e(prepared), history


def qat(module: Any, spec: ModelSpec, bundle: Any, epochs: int, lr: float, reduce_range: bool,
        freeze_bn_after: float = 0.5, batch_size: int = 64, seed: int = 0,
        augment: bool = False) -> tuple[Any, list[dict[str, Any]]]:
    """QAT on labelled training images (cross-entropy). Returns the converted graph and per-epoch figures.
    Inside torchrun (`vtool quantize --mode qat --nproc N`) the graph trains in DDP on each rank's share."""
    import torch

    torch.manual_seed(seed)
    prepared = _prepare_qat(module, spec, reduce_range)
    net, dist = ddp.qat_wrap(prepared)  # DDP inside torchrun, else as is

    def batches(epoch: int) -> Iterable[tuple[Any, Any]]:
        return ddp.qat_batches(bundle, batch_size, seed, epoch, augment, dist)

    return _train(prepared, epochs, lr, freeze_bn_after, batches, torch.nn.functional.cross_entropy, True, net, dist)


def refuse_torchrun() -> None:
    """Distillation (either QAT start) trains in one process; --nproc is for QAT on labels."""
    from toolchain.distributed.config import in_torchrun
    from toolchain.errors import UserInputError

    if in_torchrun():
        raise UserInputError("--nproc trains QAT on labelled images; distillation from the fp32 model (--distill, or "
                             "data without labels) runs in one process: drop --nproc.")


def qat_distill(module: Any, spec: ModelSpec, images: Callable[[], Iterable[np.ndarray]], settings: Any,
                reduce_range: bool, seed: int = 0) -> tuple[Any, list[dict[str, Any]]]:
    """Label-free QAT: the fake-quantized student learns the fp32 model's logits (MSE) on unlabelled images.

    BatchNorm stays frozen from the start: a pretrained network fine-tuned on a few hundred
    unlabelled images must keep its ImageNet statistics, and the teacher runs in eval mode too.
    """
    import torch

    refuse_torchrun()
    torch.manual_seed(seed)
    teacher = copy.deepcopy(module).eval()
    prepared = _prepare_qat(module, spec, reduce_range)
    cached: list[tuple[Any, Any]] = []

    def batches(epoch: int) -> Iterable[tuple[Any, Any]]:
        if not cached:
            with torch.no_grad():
                for batch in images():
                    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
                    cached.append((x, teacher(x).float()))
        order = torch.randperm(len(cached), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        return [cached[i] for i in order]

    return _train(prepared, settings.epochs, settings.lr, 0.0, batches, torch.nn.functional.mse_loss, False)


def save_pt2(converted: Any, spec: ModelSpec, path: Path) -> None:
    """Save the converted graph as an ExportedProgram `.pt2` with a dynamic batch."""
    import torch

    try:
        program = torch.export.export(converted, (_example(spec),), dynamic_shapes=_dynamic_batch(), strict=False)
    except Exception:  # noqa: BLE001 - fall back to the batch the graph was traced with
        program = torch.export.export(converted, (_example(spec),), strict=False)
    from toolchain.export.formats import save_serialized

    save_serialized(lambda buffer: torch.export.save(program, buffer), path, "torch.export.save")


def export_onnx(converted: Any, spec: ModelSpec, path: Path, opset: int = 18) -> None:
    """Dynamo ONNX export of a converted PT2E graph: quantize/dequantize ops become QDQ nodes ORT runs."""
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval

    move_exported_model_to_eval(converted)  # eval-mode ops (dropout, batch norm) in the graph
    for module in converted.modules():  # and the flag the exporter checks (exported modules refuse .eval())
        module.training = False
    try:
        torch.onnx.export(converted, (_example(spec),), str(path), dynamo=True, external_data=False,
                          dynamic_shapes=_dynamic_batch(), opset_version=opset, verbose=False)
    except Exception as exc:  # noqa: BLE001
        reason = first_line(exc, first_only=True)
        raise ExportError(f"ONNX export of the INT8 {spec.architecture} failed: {reason}") from None
