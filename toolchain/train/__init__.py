"""Training: TrainConfig -> train() -> TrainResult (also used for QAT fine-tuning).

A run directory holds `best.pt` (best validation accuracy; what later stages load), `last.pt`
(weights + optimizer state, for `--resume`), `history.json` and `curves.png`. Every file is written
atomically, and nothing is written before the model, the data and the config have been checked.
"""

from __future__ import annotations

from toolchain import callable_module
from toolchain.train.config import LAST_NAME, Progress, TrainConfig, TrainResult
from toolchain.train.loop import train
from toolchain.train.setup import (
    check_out_dir,
    class_weights,
    find_head,
    freeze_backbone,
    is_run_dir,
    prepare_training,
    recorded_run,
    resume_config,
)

__all__ = [
    "LAST_NAME", "Progress", "TrainConfig", "TrainResult", "train", "check_out_dir", "class_weights",
    "find_head", "freeze_backbone", "is_run_dir", "prepare_training", "recorded_run", "resume_config",
]

callable_module(__name__, train)  # `from toolchain import train; train(...)` calls the function
