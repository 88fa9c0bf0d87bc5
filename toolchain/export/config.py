"""ExportConfig: what to export and how to verify it, validated up front (one-line errors)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolchain.compare import Thresholds
from toolchain.errors import UserInputError, check_choice

FORMATS = ("onnx", "pt2", "torchscript")
EXPORTERS = ("dynamo", "legacy")
DEFAULT_OPSET = 18
# The dynamo exporter implements opset 18 and up; lower requests are silently kept at 18 by torch,
# so they are refused here. The legacy TorchScript-based exporter stops at 20.
OPSET_RANGES = {"dynamo": (18, 23), "legacy": (13, 20)}
EXAMPLE_BATCH = 2  # torch.export specialises a batch of 1, so dynamic exports trace with 2


@dataclass
class ExportConfig:
    """Options of `vtool export`. Verification runs the artifact against the eager model on real images."""

    format: str
    opset: int | None = None  # ONNX only; None -> 18
    out: str | Path | None = None  # None -> exported/<model-name>-<format>
    dynamic_batch: bool = True
    exporter: str | None = None  # ONNX only; None -> "dynamo"; "legacy" is an explicit fallback
    simplify: bool = False  # ONNX only: onnxscript optimizer pass after export
    freeze: bool = False  # TorchScript only: torch.jit.freeze
    data: str | None = None  # verification data; None -> the model's recorded data or bundled photos
    verify: bool = True
    atol: float = 1e-4
    min_agreement: float = 1.0
    verify_batch_sizes: tuple[int, ...] = (1, 2, 7)
    verify_samples: int = 64
    verify_runner: str = "auto"
    # Verification checks numbers, not speed: one thread is deterministic and immune to oversubscribed CPUs.
    verify_threads: int | None = 1
    overwrite: bool = False  # replace an existing artifact at `out` (anything else there is never replaced)

    def __post_init__(self) -> None:
        self.format = str(self.format).lower()
        check_choice("export format", self.format, FORMATS)
        if self.format != "onnx":
            for name, value in (("--opset", self.opset), ("--exporter", self.exporter)):
                if value is not None:
                    raise UserInputError(f"{name} applies to --format onnx only, not {self.format}; drop it.")
            if self.simplify:
                raise UserInputError(f"--simplify applies to --format onnx only, not {self.format}; drop it.")
        else:
            self.exporter = self.exporter or "dynamo"
            check_choice("ONNX exporter", self.exporter, EXPORTERS)
            self.opset = DEFAULT_OPSET if self.opset is None else int(self.opset)
            low, high = OPSET_RANGES[self.exporter]
            if not low <= self.opset <= high:
                other = "legacy" if self.exporter == "dynamo" else "dynamo"
                olow, ohigh = OPSET_RANGES[other]
                raise UserInputError(
                    f"--opset {self.opset} is out of range for the {self.exporter} exporter: expected {low}..{high} "
                    f"(default {DEFAULT_OPSET}; --exporter {other} covers {olow}..{ohigh})."
                )
        if self.freeze and self.format != "torchscript":
            raise UserInputError(f"--freeze applies to --format torchscript only, not {self.format}; drop it.")
        self.thresholds  # noqa: B018 - validates atol and min_agreement (compare.Thresholds)
        if self.verify_threads is not None and self.verify_threads < 1:
            raise UserInputError(f"verify_threads must be >= 1, got {self.verify_threads}.")
        if self.verify_samples < 1:
            raise UserInputError(f"verify_samples must be >= 1, got {self.verify_samples}.")
        sizes = tuple(int(b) for b in self.verify_batch_sizes)
        if not sizes or min(sizes) < 1:
            raise UserInputError(f"verify_batch_sizes must be numbers >= 1, got {self.verify_batch_sizes}.")
        # A static export has a batch of 1 baked in: verify it at the only batch it accepts.
        self.verify_batch_sizes = sizes if self.dynamic_batch else (1,)
        if self.out is not None:
            self.out = Path(self.out)

    @property
    def thresholds(self) -> Thresholds:
        """The verification gate at every batch size: max abs logit diff <= atol, top-1 agreement >= min."""
        return Thresholds(min_agreement=self.min_agreement, max_abs_diff=self.atol)

    @property
    def example_batch(self) -> int:
        return EXAMPLE_BATCH if self.dynamic_batch else 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out) if self.out is not None else None
        return data
