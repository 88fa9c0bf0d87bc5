"""The INT8 accuracy budget: a top-1 drop on labelled data (`max_drop`) or a top-1 agreement with the
fp32 model (`min_agreement`), always judged on images the quantizer never calibrated on."""

from __future__ import annotations

import logging
from typing import Any

from toolchain.compare import Thresholds

log = logging.getLogger(__name__)

UNLABELED_AGREEMENT = 0.95
RULE = "observed"  # see resolve_budget


def resolve_budget(max_drop: float | None, min_agreement: float | None, labeled: bool) -> Thresholds:
    """The INT8 budget as compare.Thresholds (both limits apply when both are set).

    Defaults: 1 point top-1 drop on labeled data; 0.95 top-1 agreement with fp32 on unlabeled data,
    where many images are ambiguous (crops of the bundled evaluation photos: median fp32 top-1
    probability 0.26 for EfficientNet-Lite0), so near-ties flip on logit changes far below any
    accuracy effect. Pass --min-agreement for a stricter gate.

    The rule is "observed", not parity's "ci": the float-fallback search picks the smallest float set
    whose *observed* quality meets the budget. Under "ci" an all-INT8 candidate at 0.93 agreement on 300
    images would pass as "inconclusive" against 0.95 and the search would stop short of the target.
    """
    if max_drop is None and min_agreement is None:
        return (Thresholds(max_drop=0.01, rule=RULE) if labeled
                else Thresholds(min_agreement=UNLABELED_AGREEMENT, rule=RULE))
    if not labeled and max_drop is not None and min_agreement is None:
        log.warning("--max-drop needs labeled data; judging by agreement >= %.2f on unlabeled images instead",
                    UNLABELED_AGREEMENT)
        return Thresholds(min_agreement=UNLABELED_AGREEMENT, rule=RULE)
    return Thresholds(max_drop=max_drop if labeled else None, min_agreement=min_agreement, rule=RULE)


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "agreement", "agreement_ci", "flips", "top1_ref", "top1_cand", "top1_delta", "top1_delta_ci",
            "cosine_mean", "sqnr_db", "max_abs_diff")
    return {k: metrics.get(k) for k in keys}


def table(rows: list[dict[str, Any]]) -> str:
    """One bracket per candidate for the one-line QuantBudgetError message."""
    parts = []
    for row in rows:
        figure = f"agree {row['agreement']:.3f}"
        if row.get("top1_delta") is not None:
            figure += f", drop {-row['top1_delta']:.3f}"
        if row.get("sqnr_db") is not None:
            figure += f", {row['sqnr_db']:.1f} dB"
        if row.get("speedup_vs_fp32") is not None:
            figure += f", {row['speedup_vs_fp32']:.2f}x fp32"
        parts.append(f"[{row['step']}: {row['float_nodes']} float -> {figure}]")
    return " ".join(parts)
