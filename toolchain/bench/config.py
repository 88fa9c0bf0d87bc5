"""BenchConfig: what to measure and for how long, validated up front with one-line messages."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from toolchain.errors import UserInputError, check_choice

INPUT_MODES = ("auto", "real", "synthetic")
DEFAULT_DURATION_S = 3.0


@dataclass
class WarmupPolicy:
    """Warm up like trtexec: at least `min_iterations` calls AND `min_s` seconds, then stop once the
    rolling median of the last `window` calls is within `tolerance` of the window before; give up
    waiting for stability after `max_s` seconds."""

    min_iterations: int = 5
    min_s: float = 0.5
    max_s: float = 10.0
    window: int = 5
    tolerance: float = 0.05

    def __post_init__(self) -> None:
        if self.min_iterations < 0:
            raise UserInputError(f"--warmup-iterations must be >= 0, got {self.min_iterations}.")
        if self.min_s < 0:
            raise UserInputError(f"--warmup must be >= 0 seconds, got {self.min_s}.")
        if self.max_s < self.min_s:
            raise UserInputError(
                f"warm-up max_s ({self.max_s}) must be >= the minimum warm-up time ({self.min_s}); raise max_s."
            )
        if self.window < 1:
            raise UserInputError(f"warm-up window must be >= 1 call, got {self.window}.")
        if not 0 < self.tolerance < 1:
            raise UserInputError(f"warm-up tolerance must be in (0, 1), got {self.tolerance}; e.g. 0.05 for 5%.")


@dataclass
class BenchConfig:
    """Benchmark settings. Measure `iterations` calls, or for `duration_s` seconds (at least
    `min_iterations` calls); with neither, measure for 3 s. `backends=None` means every installed
    runner that can run each model's format."""

    backends: list[str] | None = None
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    device: str = "cpu"
    threads: int | None = None
    iterations: int | None = None
    duration_s: float | None = None
    min_iterations: int = 10
    warmup: WarmupPolicy = field(default_factory=WarmupPolicy)
    concurrency: list[int] = field(default_factory=lambda: [1])
    inputs: str = "auto"
    data: str | None = None
    cv_threshold: float = 0.1
    seed: int = 0
    runner_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from toolchain.runners.base import DEVICES

        if isinstance(self.warmup, dict):
            self.warmup = WarmupPolicy(**self.warmup)
        self.batch_sizes = list(self.batch_sizes)
        self.concurrency = list(self.concurrency)
        if not self.batch_sizes or any(not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise UserInputError(
                f"--batch-size must list whole numbers >= 1, got {self.batch_sizes}; e.g. --batch-size 1,8,32."
            )
        if not self.concurrency or any(not isinstance(c, int) or c < 1 for c in self.concurrency):
            raise UserInputError(
                f"--concurrency must list whole numbers >= 1, got {self.concurrency}; e.g. --concurrency 1,4."
            )
        check_choice("device", self.device, DEVICES)
        if self.threads is not None and self.threads < 1:
            raise UserInputError(f"--threads must be >= 1, got {self.threads}; omit it to use the backend default.")
        if self.iterations is not None and self.duration_s is not None:
            raise UserInputError(
                f"--iterations {self.iterations} and --duration {self.duration_s} were both given; pass only one."
            )
        if self.iterations is not None and self.iterations < 1:
            raise UserInputError(f"--iterations must be >= 1, got {self.iterations}.")
        if self.duration_s is not None and self.duration_s <= 0:
            raise UserInputError(f"--duration must be > 0 seconds, got {self.duration_s}.")
        if self.min_iterations < 1:
            raise UserInputError(f"min_iterations must be >= 1, got {self.min_iterations}.")
        check_choice("--inputs", self.inputs, INPUT_MODES)
        if not 0 < self.cv_threshold:
            raise UserInputError(f"cv_threshold must be > 0, got {self.cv_threshold}; e.g. 0.1 for 10%.")
        if self.backends is not None:
            self.backends = [b.strip() for b in self.backends if b.strip()]
            if not self.backends:
                raise UserInputError("--backend was given but empty; name at least one, e.g. --backend torch.")

    @property
    def measure_duration_s(self) -> float | None:
        """Seconds to measure for, or None when a fixed iteration count is asked for."""
        if self.iterations is not None:
            return None
        return self.duration_s if self.duration_s is not None else DEFAULT_DURATION_S

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["measure_duration_s"] = self.measure_duration_s
        return data
