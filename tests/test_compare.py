"""compare.Thresholds / CompareResult: the one gate of export, quantize, parity and the pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.compare import CompareResult, Thresholds, compare
from toolchain.errors import UserInputError


@pytest.mark.parametrize("kwargs, match", [
    ({"max_drop": -0.01}, "--max-drop must be a fraction in"),
    ({"max_drop": 1.0}, "--max-drop must be a fraction in"),  # a drop of 1 can never be exceeded: no gate
    ({"min_agreement": 0.0}, "--min-agreement must be in"),  # an agreement of 0 always holds: no gate
    ({"min_agreement": 1.01}, "--min-agreement must be in"),
    ({"max_abs_diff": -1e-9}, "must be >= 0"),
    ({"max_abs_diff": float("nan")}, "must be >= 0"),
])
def test_ranges_are_validated_once_for_every_stage(kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        Thresholds(**kwargs)


def test_edges_of_the_valid_ranges() -> None:
    Thresholds(max_drop=0.0, min_agreement=1.0, max_abs_diff=0.0)
    Thresholds(max_drop=0.999, min_agreement=1e-6)
    assert Thresholds().check({"agreement": 0.0, "top1_delta": -1.0, "max_abs_diff": 1e9}) == []  # nothing set


def test_a_value_exactly_at_a_threshold_passes() -> None:
    gate = Thresholds(max_drop=0.01, min_agreement=0.99, max_abs_diff=0.5)
    assert gate.check({"agreement": 99 / 100, "top1_delta": -0.01, "max_abs_diff": 0.5}) == []
    assert gate.check({"agreement": 297 / 300, "top1_delta": -(0.96 - 0.95), "max_abs_diff": 0.0}) == []


def test_each_missed_threshold_is_one_line() -> None:
    gate = Thresholds(max_drop=0.01, min_agreement=0.99, max_abs_diff=0.1)
    failures = gate.check({"agreement": 0.9, "top1_delta": -0.05, "top1_ref": 0.95, "top1_cand": 0.90,
                           "max_abs_diff": 0.2})
    assert failures == ["top-1 fell 0.0500 (0.9500 -> 0.9000), more than --max-drop 0.01",
                        "top-1 agreement 0.9000 < --min-agreement 0.99", "max abs logit diff 0.2 > atol 0.1"]


def test_drop_is_judged_only_with_labels() -> None:
    gate = Thresholds(max_drop=0.01)
    assert gate.check({"agreement": 0.5, "top1_delta": None}) == []  # unlabelled images: no accuracy to drop
    assert gate.check({"agreement": 0.5, "top1_delta": -0.02}) == ["top-1 fell 0.0200, more than --max-drop 0.01"]
    assert gate.check({"agreement": 0.5, "top1_delta": 0.3}) == []  # better than the reference


def test_compare_result_is_truthy_when_every_threshold_holds() -> None:
    ok = CompareResult({"agreement": 1.0}, Thresholds(min_agreement=0.99))
    bad = CompareResult({"agreement": 0.5}, Thresholds(min_agreement=0.99))
    assert ok and ok.passed and ok.check() == [] and ok.failures == []
    assert not bad and bad.failures == bad.check() and "agreement 0.5000" in bad.failures[0]
    assert Thresholds(0.01, 0.99).to_dict() == {"max_drop": 0.01, "min_agreement": 0.99, "max_abs_diff": None}


def test_compare_runs_the_metrics_then_the_gate() -> None:
    ref = np.array([[2.0, 0.0], [0.0, 2.0]])
    result = compare(ref, ref[:, ::-1].copy(), Thresholds(min_agreement=0.5), labels=np.array([0, 1]))
    assert not result and result.metrics["agreement"] == 0.0 and result.metrics["top1_delta"] == -1.0
