"""One quality gate for every stage: Thresholds (what must hold) and CompareResult (metrics + thresholds).

After Polygraphy's OutputCompareResult: a CompareResult is truthy when every threshold holds, and
`check()` lists what failed, one line each. Export verification (atol + agreement per batch size),
quantization's accuracy budget, `vtool parity` and the pipeline all gate through this module; the
metrics themselves come from metrics.compare_logits.

Valid ranges (one rule everywhere): max_drop in [0, 1) (a drop of 1 can never be exceeded, so it would
not gate), min_agreement in (0, 1] (0 would not gate either), max_abs_diff >= 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from toolchain.errors import UserInputError

EPSILON = 1e-12  # float noise allowed at the edge of a threshold (99/100 agreement against min 0.99)


@dataclass(frozen=True)
class Thresholds:
    """The gate: every limit that is set must hold. `max_drop` is in accuracy points (0.01 = 1 point) and
    applies only when labels exist; `min_agreement` is the top-1 match rate with the reference;
    `max_abs_diff` bounds the largest logit difference (export's atol)."""

    max_drop: float | None = None
    min_agreement: float | None = None
    max_abs_diff: float | None = None

    def __post_init__(self) -> None:
        if self.max_drop is not None and not 0.0 <= self.max_drop < 1.0:
            raise UserInputError(f"--max-drop must be a fraction in [0, 1), got {self.max_drop}; e.g. 0.01 = 1 point.")
        if self.min_agreement is not None and not 0.0 < self.min_agreement <= 1.0:
            raise UserInputError(f"--min-agreement must be in (0, 1], got {self.min_agreement}; e.g. 0.99.")
        if self.max_abs_diff is not None and not self.max_abs_diff >= 0.0:
            raise UserInputError(f"--max-abs-diff (atol) must be >= 0, got {self.max_abs_diff}.")

    def check(self, metrics: dict[str, Any]) -> list[str]:
        """One line per threshold that `metrics` (metrics.compare_logits keys) misses; empty when all hold."""
        failures = []
        delta = metrics.get("top1_delta")
        if self.max_drop is not None and delta is not None and -delta > self.max_drop + EPSILON:
            before = metrics.get("top1_ref"), metrics.get("top1_cand")
            figures = f" ({before[0]:.4f} -> {before[1]:.4f})" if None not in before else ""
            failures.append(f"top-1 fell {-delta:.4f}{figures}, more than --max-drop {self.max_drop:g}")
        agreement = metrics.get("agreement")
        if self.min_agreement is not None and agreement is not None and agreement < self.min_agreement - EPSILON:
            failures.append(f"top-1 agreement {agreement:.4f} < --min-agreement {self.min_agreement:g}")
        diff = metrics.get("max_abs_diff")
        if self.max_abs_diff is not None and diff is not None and diff > self.max_abs_diff:
            failures.append(f"max abs logit diff {diff:.3g} > atol {self.max_abs_diff:g}")
        return failures

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CompareResult:
    """Metrics of a candidate against its reference and the thresholds they were held to."""

    metrics: dict[str, Any]
    thresholds: Thresholds = field(default_factory=Thresholds)

    def check(self) -> list[str]:
        """What failed, one line each (empty: passed)."""
        return self.thresholds.check(self.metrics)

    @property
    def failures(self) -> list[str]:
        return self.check()

    @property
    def passed(self) -> bool:
        return not self.check()

    def __bool__(self) -> bool:
        return self.passed


def compare(reference: Any, candidate: Any, thresholds: Thresholds | None = None, labels: Any = None,
            class_names: tuple[str, ...] | list[str] = ()) -> CompareResult:
    """compare_logits(reference, candidate, labels) held to `thresholds`."""
    from toolchain.metrics import compare_logits

    return CompareResult(compare_logits(reference, candidate, labels, class_names), thresholds or Thresholds())
