"""TrainConfig (validated hyper-parameters), Progress (callback payload) and TrainResult."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolchain.errors import UserInputError, check_choice

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda")
LAST_NAME = "last.pt"


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (recorded in every checkpoint)."""

    epochs: int = 15
    lr: float = 2e-3
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    class_weighted: bool = False
    batch_size: int = 64
    seed: int = 0
    patience: int | None = None
    augment: bool = True
    grad_clip: float | None = None
    freeze_backbone: bool = False
    amp: bool = True
    device: str = "auto"
    step_size: int = 0  # step schedule: decay every N epochs (0: every epochs // 3)
    gamma: float = 0.1
    resume: bool = False
    overwrite: bool = False
    sync_bn: bool = False  # distributed: BatchNorm statistics over all ranks' images (CUDA only)
    workers: int = 0  # DataLoader processes decoding images when a split is too large to cache

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise UserInputError(f"--epochs must be a whole number >= 1, got {self.epochs}.")
        if not self.lr > 0:
            raise UserInputError(f"--lr must be > 0, got {self.lr}; try 1e-3 for AdamW or 0.05 for SGD.")
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("device", self.device, DEVICES)
        if self.batch_size < 1:
            raise UserInputError(f"--batch-size must be >= 1, got {self.batch_size}.")
        if self.weight_decay < 0:
            raise UserInputError(f"--weight-decay must be >= 0, got {self.weight_decay}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UserInputError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.warmup_epochs < 0:
            raise UserInputError(f"--warmup-epochs must be >= 0, got {self.warmup_epochs}.")
        if self.patience is not None and self.patience < 1:
            raise UserInputError(f"--patience must be >= 1 epoch (or left out to disable), got {self.patience}.")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise UserInputError(f"--grad-clip must be > 0, got {self.grad_clip}.")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise UserInputError(f"--workers must be a whole number >= 0 (0 decodes in the training process), "
                                 f"got {self.workers}.")
        if self.step_size < 0 or not 0 < self.gamma <= 1:
            raise UserInputError(f"step schedule needs step_size >= 0 and gamma in (0, 1], got "
                                 f"{self.step_size} / {self.gamma}.")

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """Learning rate for a global step: linear warm-up, then cosine / step / constant."""
        total = self.epochs * steps_per_epoch
        warmup = int(round(self.warmup_epochs * steps_per_epoch))
        if warmup and step < warmup:
            return self.lr * (step + 1) / warmup
        if self.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if self.schedule == "step":
            every = self.step_size or max(1, self.epochs // 3)
            return self.lr * self.gamma ** (step // steps_per_epoch // every)
        return self.lr


@dataclass
class Progress:
    """What a progress callback receives: after every batch (`epoch_done` False) and every epoch."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    accuracy: float
    lr: float
    epoch_done: bool = False
    val_loss: float | None = None
    val_accuracy: float | None = None


@dataclass
class TrainResult:
    """Where the run lives and how it went; `metrics` holds best-epoch val and test figures."""

    out_dir: Path
    best_path: Path
    last_path: Path
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float = 0.0
    world_size: int = 1  # processes that trained it (DDP)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("out_dir", "best_path", "last_path"):
            data[key] = str(data[key])
        return data
