"""PipelineConfig: what `vtool pipeline` runs, validated before any work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolchain.compare import Thresholds
from toolchain.errors import UserInputError, check_choice
from toolchain.models.config import ModelOptions

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
    force: bool = False  # re-run every stage even when its inputs did not change
    overwrite: bool = False  # write into an --out that holds other files (its stage folders are replaced)
    options: ModelOptions = field(default_factory=ModelOptions)  # --weights, --config, --mean, --labels...
    split_file: str | None = None  # the user's own split of --data (datasplit)
    test_data: str | None = None  # a holdout folder: the test split of eval and parity
    gate: str = "ci"  # compare.RULES

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
        if self.threads is not None and self.threads < 1:
            raise UserInputError(f"--threads must be >= 1, got {self.threads}.")
        if self.bench_seconds <= 0:
            raise UserInputError(f"--bench-seconds must be > 0, got {self.bench_seconds}.")
        if isinstance(self.options, dict):
            self.options = ModelOptions(**self.options)
        for name in ("split_file", "test_data"):
            if getattr(self, name) is not None:
                setattr(self, name, str(getattr(self, name)))
        if self.data in ("auto", "none", ""):
            self.data = None if self.data != "auto" or self._pretrained_imagenet() else "digits"
        if self.data is not None:
            from toolchain.datasplit import check_split_config

            check_split_config(self.data, self.split_file, self.test_data)
        elif self.split_file or self.test_data:
            raise UserInputError("--split-file and --test-data split --data; pass --data DIR too.")
        if self.run is None:
            stem = Path(self.model.split(":")[0]).name.replace(".py", "") or "model"
            self.run = f"{stem}-{Path(self.data).name if self.data else 'photos'}"
        self.out = Path(self.out) if self.out is not None else Path("exported") / self.run
        self._check_out()

    def _pretrained_imagenet(self) -> bool:
        from toolchain.models import get_entry, is_registered

        return is_registered(self.model) and get_entry(self.model).pretrained_by_default

    def _check_out(self) -> None:
        """Before any work: never into the model it reads, never into a folder of other files without
        --overwrite (a re-run into its own run folder skips unchanged stages), and writable."""
        from toolchain.outputs import check_destination
        from toolchain.pipeline.state import STATE_FILE

        out = Path(self.out)
        if out.is_dir() and any(out.iterdir()) and not (out / STATE_FILE).is_file() and not self.overwrite:
            raise UserInputError(f"--out '{out}' holds files that are not a vtool pipeline run; choose a new or empty "
                                 "--out, or pass --overwrite to write the run's stage folders into it.")
        check_destination(out, sources=(self.model,), overwrite=True, replaceable=lambda _: True)

    @property
    def thresholds(self) -> Thresholds:
        """The gates for INT8 and parity: top-1 drop on labelled data, top-1 agreement with the original."""
        return Thresholds(max_drop=self.max_drop, min_agreement=self.min_agreement, rule=self.gate)

    def wants(self, stage: str) -> bool:
        return stage in self.stages

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        data["options"] = self.options.to_dict()
        return data
