"""Label-free QAT that starts where vtool's PTQ ends: distil the fp32 logits into the all-INT8 QDQ graph.

torchao's PT2E QAT starts from its own observers and round-to-nearest weights (13.7 dB on
EfficientNet-Lite0 after distillation, where vtool's PTQ reaches 24.6 dB). Here the INT8 model
vtool's PTQ built (its ranges, GPTQ/refit integers and biases) runs in torch (qdqtorch.py) and is
fine-tuned end to end under the fp32 model's logits: weights in units of their own quantization step
(one learning rate suits every layer), biases, and activation scales (LSQ), with straight-through
rounding. The result maps back onto the PTQ (integers on the same scales, biases, ranges), so it
builds its candidates from it unchanged. Whole source images are held out (other photos, not other
crops of the same ones: a crop-level hold-out let Lite0 over-fit its 11 photos unseen); the epoch
with the lowest held-out loss is kept, and nothing when no epoch beat the PTQ start.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserInputError
from toolchain.metrics import sqnr_db
from toolchain.quantize.config import WeightRange
from toolchain.quantize.qdqtorch import qdq_module

log = logging.getLogger(__name__)

HOLDOUT_EVERY = 4  # every 4th source image (all its crops) judges the epochs
BIAS_LR = 1e-4  # Adam step of a bias (absolute): 1e-3 over-fitted the 11 calibration photos of Lite0
RANGE_LR = 1e-3  # Adam step of log(activation scale)
FEATURE_WEIGHT = 1.0  # normalized activation MSE against normalized logit MSE, when the Teacher names activations
FIDELITY_IMAGES = 32  # images on which the torch copy is checked against ONNX Runtime
PROGRESS_EVERY_S = 30.0  # an epoch on EfficientNet-Lite0 takes about 2 min on 2 cores


class Teacher:
    """The fp32 graph on any batch (one ONNX Runtime session): its logits and, when named, its activations.

    Online, not precomputed, because mixed images (`mixup`) exist only inside a training step.
    """

    def __init__(self, fp32: Path, spec: Any, names: list[str], threads: int | None) -> None:
        import onnx

        from toolchain.runners import get_runner

        produced = {out for node in onnx.load(str(fp32)).graph.node for out in node.output}
        self.names = [name for name in names if name in produced]
        self.runner = get_runner("onnxruntime", fp32, spec=spec, threads=threads, expose_outputs=self.names)
        self.logits_name = self.runner.output_names[0]

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        outputs = self.runner.run_outputs(x, list(dict.fromkeys([self.logits_name, *self.names])))
        return outputs[self.logits_name], {name: outputs[name] for name in self.names}  # logits may be named too

    def close(self) -> None:
        self.runner.close()


@dataclass
class FinetuneResult:
    """What the fine-tune changed, in the PTQ's terms, and how the held-out loss moved."""

    kept: bool
    loss_before: float
    loss_after: float
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (integers, scales)
    biases: dict[str, np.ndarray] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # learned activation ranges (range_lr)
    fidelity_db: float = 0.0  # torch module vs ONNX Runtime on the QDQ file, before training


def distill(qdq: Path, teacher_logits: np.ndarray, student_logits: np.ndarray, images: np.ndarray,
            weight_qmax: int | dict[str, WeightRange], epochs: int, lr: float, batch_size: int = 16, seed: int = 0,
            bias_lr: float = BIAS_LR, range_lr: float | None = RANGE_LR,
            sources: np.ndarray | None = None, teacher: Teacher | None = None,
            feature_weight: float = FEATURE_WEIGHT, mixup: float = 0.0) -> FinetuneResult:
    """Fine-tune the QDQ model at `qdq` towards `teacher_logits` (fp32) on `images`.

    `student_logits`: ONNX Runtime's logits of the QDQ file on the first images (checks the torch copy).
    `lr`: Adam step for the weights in units of their quantization step; `bias_lr` in absolute units.
    `range_lr`: activation scales learn too (Adam step on their logarithm); None keeps the PTQ's ranges.
    `sources`: the source image of each image (crops, mirrors): whole sources are held out, as the judging
    images are other photos, not other crops of the same ones (default: each image its own source).
    `teacher`: the fp32 graph, run online; every activation it names is also matched to its fp32 value
    (normalized MSE, times `feature_weight`): more targets per image than the logits alone, which is what
    a few calibration photos lack.
    `mixup`: every training image is blended with another training image, weight ~ Beta(mixup, mixup),
    and the teacher labels the blend (needs `teacher`): new inputs at every step instead of the same few
    photos each epoch. The held-out loss stays on the clean held-out images.
    """
    import torch

    if mixup > 0 and teacher is None:
        raise UserInputError("mixup distillation needs the fp32 teacher to label the blended images.")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = qdq_module(qdq, weight_qmax, learn_ranges=range_lr is not None)
    x_all = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    y_all = torch.from_numpy(np.ascontiguousarray(teacher_logits, dtype=np.float32))

    def predict(idx: np.ndarray) -> Any:
        with torch.no_grad():
            return torch.cat([net(x_all[idx[i:i + 32]]) for i in range(0, len(idx), 32)])

    fidelity = sqnr_db(student_logits, predict(np.arange(len(student_logits))).numpy())
    log.info("QAT from PTQ: the torch copy of the INT8 graph matches ONNX Runtime at %.1f dB", fidelity)
    sources = np.arange(len(images)) if sources is None else np.asarray(sources)
    held = np.isin(sources, np.unique(sources)[HOLDOUT_EVERY - 1::HOLDOUT_EVERY])
    train_idx, held_idx = np.flatnonzero(~held), np.flatnonzero(held)
    if not len(train_idx) or not len(held_idx):
        raise UserInputError(f"QAT from PTQ holds out whole source images: it needs >= {HOLDOUT_EVERY} of them, "
                             f"the calibration data has {len(np.unique(sources))}; give more images.")

    def held_loss() -> float:
        return float(torch.nn.functional.mse_loss(predict(held_idx), y_all[held_idx]))

    taps = ([name for name in net.activation_names() if name in teacher.names]
            if teacher is not None and feature_weight > 0 else [])
    y_scale = float((y_all ** 2).mean()) + 1e-12

    def loss_of(idx: np.ndarray) -> Any:
        """MSE to the fp32 logits; with activations, normalized so the two terms weigh alike on any model."""
        x, y = x_all[idx], y_all[idx]
        if mixup > 0:
            share = torch.from_numpy(rng.beta(mixup, mixup, len(idx)).astype(np.float32)).view(-1, 1, 1, 1)
            x = share * x + (1 - share) * x_all[rng.choice(train_idx, len(idx))]
        targets: dict[str, np.ndarray] = {}
        if mixup > 0 or taps:
            teacher_logits, targets = teacher(x.numpy())
            y = torch.from_numpy(teacher_logits) if mixup > 0 else y
        net.taps, net.tapped = set(taps), {}
        logits = torch.nn.functional.mse_loss(net(x), y)
        net.taps = set()
        if not taps:
            return logits, logits
        matched = sum(torch.nn.functional.mse_loss(net.tapped[name], torch.from_numpy(targets[name]))
                      / (float(np.mean(targets[name] ** 2)) + 1e-12) for name in taps) / len(taps)
        return logits / y_scale + feature_weight * matched, logits

    groups = [{"params": list(net.weights.parameters()), "lr": lr},
              {"params": list(net.biases.parameters()), "lr": bias_lr}]
    if range_lr is not None:
        groups.append({"params": list(net.log_scales.parameters()), "lr": range_lr})
    optimizer = torch.optim.Adam(groups)
    steps = epochs * math.ceil(len(train_idx) / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    generator = torch.Generator().manual_seed(seed)
    before = held_loss()
    best = (before, 0, None)
    history: list[dict[str, Any]] = []
    for epoch in range(epochs):
        started = time.perf_counter()
        order = train_idx[torch.randperm(len(train_idx), generator=generator).numpy()]
        total, shown = 0.0, started
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            optimizer.zero_grad()
            loss, logits_loss = loss_of(idx)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(logits_loss.detach()) * len(idx)
            if time.perf_counter() - shown > PROGRESS_EVERY_S:
                shown = time.perf_counter()
                log.info("QAT from PTQ epoch %d/%d: %d of %d images", epoch + 1, epochs, i + len(idx), len(order))
        held = held_loss()
        history.append({"epoch": epoch + 1, "train_loss": total / len(train_idx), "held_out_loss": held,
                        "seconds": round(time.perf_counter() - started, 1)})
        log.info("QAT from PTQ epoch %d/%d: train MSE %.4g, held-out MSE %.4g (start %.4g)", epoch + 1, epochs,
                 history[-1]["train_loss"], held, before)
        if held < best[0]:
            best = (held, epoch + 1, {k: v.detach().clone() for k, v in net.state_dict().items()})
    if best[2] is not None:
        net.load_state_dict(best[2])
    kept = best[2] is not None
    if not kept:
        return FinetuneResult(False, before, before, 0, history, fidelity_db=fidelity)
    return FinetuneResult(True, before, best[0], best[1], history, net.integer_weights(), net.float_biases(),
                          net.activation_ranges(), fidelity)
