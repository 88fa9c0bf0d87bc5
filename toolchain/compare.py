"""One quality gate for every stage: Thresholds (what must hold) and CompareResult (metrics + thresholds).

After Polygraphy's OutputCompareResult: a CompareResult is truthy when every threshold holds, and
`check()` lists what failed, one line each. Export verification (atol + agreement per batch size),
quantization's accuracy budget, `vtool parity` and the pipeline all gate through this module; the
metrics themselves come from metrics.compare_logits.

Valid ranges (one rule everywhere): max_drop in [0, 1) (a drop of 1 can never be exceeded, so it would
not gate), min_agreement in (0, 1] (0 would not gate either), max_abs_diff >= 0.

The gate rule (`Thresholds.rule`) knows sample sizes. "ci" (the default) fails a gate only when the
evidence says it was missed: the whole 95% interval lies on the wrong side of the threshold
(agreement: the Wilson upper bound is below --min-agreement; top-1 drop: the lower bound of the paired
interval is above --max-drop). One flipped image out of 54 is not evidence that agreement is below 0.99,
so it passes, marked "inconclusive" in `notes()`. "observed" judges the observed values as they are.
Metrics without intervals (no `agreement_ci` / `top1_delta_ci`) are judged as observed. max_abs_diff is
never statistical: the largest logit difference is judged as observed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from toolchain.errors import UserInputError, check_choice

RULES = ("ci", "observed")
RULE_TEXT = {
    "ci": "fail only when the 95% interval lies wholly past the threshold (agreement: Wilson upper bound < "
          "--min-agreement; top-1 drop: lower bound of the paired Newcombe interval > --max-drop)",
    "observed": "fail when the observed value misses the threshold, whatever the sample size",
}
EPSILON = 1e-12  # float noise allowed at the edge of a threshold (99/100 agreement against min 0.99)


@dataclass(frozen=True)
class Thresholds:
    """The gate: every limit that is set must hold. `max_drop` is in accuracy points (0.01 = 1 point) and
    applies only when labels exist; `min_agreement` is the top-1 match rate with the reference;
    `max_abs_diff` bounds the largest logit difference (export's atol)."""

    max_drop: float | None = None
    min_agreement: float | None = None
    max_abs_diff: float | None = None
    rule: str = "ci"

    def __post_init__(self) -> None:
        check_choice("gate rule", self.rule, RULES)
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
        if self.max_drop is not None and delta is not None and self._drop_missed(metrics):
            before = metrics.get("top1_ref"), metrics.get("top1_cand")
            figures = f" ({before[0]:.4f} -> {before[1]:.4f})" if None not in before else ""
            failures.append(f"top-1 fell {-delta:.4f}{figures}{_drop_ci(metrics)}, more than --max-drop "
                            f"{self.max_drop:g}")
        agreement = metrics.get("agreement")
        if self.min_agreement is not None and agreement is not None and self._agreement_missed(metrics):
            failures.append(f"top-1 agreement {agreement:.4f}{_agreement_ci(metrics)} < --min-agreement "
                            f"{self.min_agreement:g}")
        diff = metrics.get("max_abs_diff")
        if self.max_abs_diff is not None and diff is not None and diff > self.max_abs_diff:
            failures.append(f"max abs logit diff {diff:.3g} > atol {self.max_abs_diff:g}")
        return failures

    def notes(self, metrics: dict[str, Any]) -> list[str]:
        """Gates that passed only because the sample is too small to show a miss ("inconclusive"), one line each."""
        notes = []
        delta, agreement = metrics.get("top1_delta"), metrics.get("agreement")
        if (self.max_drop is not None and delta is not None and -delta > self.max_drop + EPSILON
                and not self._drop_missed(metrics)):
            notes.append(f"inconclusive: top-1 fell {-delta:.4f}, more than --max-drop {self.max_drop:g}, but the "
                         f"95% interval{_drop_ci(metrics, bare=True)} still reaches it (n={metrics.get('n')}); "
                         "more images would tell")
        if (self.min_agreement is not None and agreement is not None and agreement < self.min_agreement - EPSILON
                and not self._agreement_missed(metrics)):
            notes.append(f"inconclusive: agreement {agreement:.4f} < --min-agreement {self.min_agreement:g}, but "
                         f"the 95% interval{_agreement_ci(metrics, bare=True)} still reaches it; more images "
                         "would tell")
        return notes

    def _drop_missed(self, metrics: dict[str, Any]) -> bool:
        ci = metrics.get("top1_delta_ci")
        if self.rule == "ci" and ci:
            return -ci[1] > self.max_drop + EPSILON  # even the most favourable change is a larger drop
        return -metrics["top1_delta"] > self.max_drop + EPSILON

    def _agreement_missed(self, metrics: dict[str, Any]) -> bool:
        ci = metrics.get("agreement_ci")
        if self.rule == "ci" and ci:
            return ci[1] < self.min_agreement - EPSILON  # even the upper bound is below the threshold
        return metrics["agreement"] < self.min_agreement - EPSILON

    @property
    def statement(self) -> str:
        """The rule in words, as printed under a gated result."""
        return f"gate rule '{self.rule}': {RULE_TEXT[self.rule]}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _agreement_ci(metrics: dict[str, Any], bare: bool = False) -> str:
    ci, flips, n = metrics.get("agreement_ci"), metrics.get("flips"), metrics.get("n")
    if not ci:
        return ""
    text = f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text if bare else f" (95% CI{text}, {flips} flip{'s' if flips != 1 else ''} of {n})"


def _drop_ci(metrics: dict[str, Any], bare: bool = False) -> str:
    ci = metrics.get("top1_delta_ci")
    if not ci:
        return ""
    text = f" [{-ci[1]:.4f}, {-ci[0]:.4f}]"  # the interval of the drop (= -change)
    return text if bare else f" (drop 95% CI{text}, n={metrics.get('n')})"


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
    def notes(self) -> list[str]:
        """Gates that passed only as inconclusive (the sample is too small to show a miss)."""
        return self.thresholds.notes(self.metrics)

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
