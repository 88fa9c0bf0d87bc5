"""PipelineConfig: what `vtool pipeline` runs, validated before any work starts."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolchain.compare import Thresholds
from toolchain.errors import UserInputError, check_choice

STAGES = ("train", "eval", "export", "quantize", "bench", "parity", "report")
FORMATS = ("onnx", "pt2", "torchscript")
QUANT_MODES = ("ptq", "qat")


@dataclass
class PipelineConfig:
    """The whole chain on one model: train or load -> export -> quantize -> bench -> parity -> report."""

    model: str = "simple-cnn"
    data: str | None = "auto"  # auto: digits, or None (bundled photos) for pretrained ImageNet models
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    quantize: list[str] = field(default_factory=lambda: list(QUANT_MODES))
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    out: Path | None = None  # None: exported/<run>
    run: str | None = None  # None: <model>-<data>
    epochs: int = 15
    qat_epochs: int = 3
    batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    bench_seconds: float = 1.0
    threads: int | None = None
    samples: int = 256
    max_drop: float = 0.01
    min_agreement: float = 0.99
    seed: int = 0
    explain_samples: int = 16  # explanation parity of the INT8 artifacts on this many images; 0 = off
    force: bool = False  # re-run every stage even when its inputs did not change

    def __post_init__(self) -> None:
        self.formats = [f.lower() for f in self.formats]
        for name in self.formats:
            check_choice("format", name, FORMATS)
        for mode in self.quantize:
            check_choice("quantization mode", mode, QUANT_MODES)
        for stage in self.stages:
            check_choice("stage", stage, STAGES)
        if self.quantize and "onnx" not in self.formats:
            raise UserInputError("--quantize needs the onnx format (INT8 artifacts are ONNX); add onnx to --formats.")
        if self.epochs < 1 or self.qat_epochs < 1:
            raise UserInputError(f"--epochs must be >= 1, got {self.epochs} (qat {self.qat_epochs}).")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UserInputError(f"--batch-size must list numbers >= 1, got {self.batch_sizes}.")
        self.thresholds  # noqa: B018 - validates --max-drop / --min-agreement (compare.Thresholds)
        if self.explain_samples < 0:
            raise UserInputError(f"--explain-samples must be >= 0 (0 = off), got {self.explain_samples}.")
        if self.bench_seconds <= 0:
            raise UserInputError(f"--bench-seconds must be > 0, got {self.bench_seconds}.")
        if self.data in ("auto", "none", ""):
            self.data = None if self.data != "auto" or self._pretrained_imagenet() else "digits"
        if self.run is None:
            stem = Path(self.model.split(":")[0]).name.replace(".py", "") or "model"
            self.run = f"{stem}-{Path(self.data).name if self.data else 'photos'}"
        self.out = Path(self.out) if self.out is not None else Path("exported") / self.run
        self._check_writable(self.out)

    def _pretrained_imagenet(self) -> bool:
        from toolchain.models import get_entry, is_registered

        return is_registered(self.model) and get_entry(self.model).pretrained_by_default

    @staticmethod
    def _check_writable(out: Path) -> None:
        """Fail before any work when --out cannot be created or written."""
        probe = out
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
        if probe.exists() and (not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK)):
            why = "not a directory" if not probe.is_dir() else "read-only"
            raise UserInputError(f"--out '{out}' is not writable ('{probe}' is {why}); choose a writable directory.")

    @property
    def thresholds(self) -> Thresholds:
        """The gates for INT8 and parity: top-1 drop on labelled data, top-1 agreement with the original."""
        return Thresholds(max_drop=self.max_drop, min_agreement=self.min_agreement)

    def wants(self, stage: str) -> bool:
        return stage in self.stages

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        return data
