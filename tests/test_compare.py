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
    assert Thresholds(0.01, 0.99).to_dict() == {"max_drop": 0.01, "min_agreement": 0.99, "max_abs_diff": None,
                                                 "rule": "ci"}


def test_compare_runs_the_metrics_then_the_gate() -> None:
    ref = np.array([[2.0, 0.0], [0.0, 2.0]])
    # two images are too few for the default 'ci' rule to call a miss; 'observed' judges them as they are
    assert compare(ref, ref[:, ::-1].copy(), Thresholds(min_agreement=0.5), labels=np.array([0, 1]))
    result = compare(ref, ref[:, ::-1].copy(), Thresholds(min_agreement=0.5, rule="observed"), labels=np.array([0, 1]))
    assert not result and result.metrics["agreement"] == 0.0 and result.metrics["top1_delta"] == -1.0


def _logits(top1: list[int], classes: int = 3) -> np.ndarray:
    out = np.zeros((len(top1), classes))
    out[np.arange(len(top1)), top1] = 1.0
    return out


def test_one_flip_in_a_small_set_passes_as_inconclusive_under_the_ci_rule() -> None:
    """The issue's case: 1 flipped image of 54 against --min-agreement 0.99 / --max-drop 0.01 (labelled)."""
    labels = np.array([i % 3 for i in range(54)])
    cand = labels.copy()
    cand[0] = (cand[0] + 1) % 3
    gate = Thresholds(max_drop=0.01, min_agreement=0.99)
    result = compare(_logits(labels), _logits(cand), gate, labels=labels)
    m = result.metrics
    assert m["n"] == 54 and m["flips"] == 1 and m["paired"] == {"both": 53, "ref_only": 1, "cand_only": 0,
                                                                "neither": 0}
    assert m["agreement_ci"][0] < 53 / 54 < m["agreement_ci"][1] <= 1.0
    assert result, result.failures
    assert len(result.notes) == 2 and all(n.startswith("inconclusive") for n in result.notes)
    strict = compare(_logits(labels), _logits(cand), Thresholds(0.01, 0.99, rule="observed"), labels=labels)
    assert not strict and len(strict.failures) == 2 and strict.notes == []


def test_the_ci_rule_still_fails_when_the_evidence_is_clear() -> None:
    labels = np.array([i % 3 for i in range(200)])
    cand = labels.copy()
    cand[:20] = (cand[:20] + 1) % 3  # 20 flips of 200: agreement 0.90, upper bound ~0.94 < 0.99
    result = compare(_logits(labels), _logits(cand), Thresholds(max_drop=0.01, min_agreement=0.99), labels=labels)
    assert not result and result.notes == []
    assert "95% CI [" in result.failures[0] and "drop 95% CI" in result.failures[0]
    assert "20 flips of 200" in result.failures[1]


def test_unknown_gate_rule() -> None:
    with pytest.raises(UserInputError, match="Unknown gate rule 'strict'"):
        Thresholds(min_agreement=0.9, rule="strict")


def test_wilson_and_paired_intervals() -> None:
    from toolchain.stats import paired_difference, wilson

    assert wilson(0, 0) == (0.0, 1.0) and wilson(10, 10)[1] == 1.0 and wilson(0, 10)[0] == 0.0
    low, high = wilson(53, 54)
    assert 0.90 < low < 0.91 and 0.996 < high < 0.997  # Wilson score interval, z = 1.96
    low, high = paired_difference(both=264, ref_only=5, cand_only=0, neither=0)
    assert low < -5 / 269 < high < 0  # 5 images lost, none gained: the change is negative
    low, high = paired_difference(both=250, ref_only=0, cand_only=0, neither=19)
    assert low == pytest.approx(-high) and high < 0.02  # identical answers: a narrow interval around 0
