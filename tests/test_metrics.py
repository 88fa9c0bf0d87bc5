"""The math behind every gate (metrics.py): top-k accuracy, SQNR, and compare_logits' figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toolchain.metrics import compare_logits, sqnr_db, topk_accuracy


def test_topk_accuracy_counts_a_hit_anywhere_in_the_top_k() -> None:
    logits = np.array([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 0])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(logits, labels, 3) == 1.0
    assert topk_accuracy(logits, labels, 5) == 1.0  # k larger than the class count: every class counts


def test_sqnr_is_infinite_for_identical_logits_and_follows_the_noise_power() -> None:
    ref = np.array([[3.0, -4.0]])  # signal power 25
    assert sqnr_db(ref, ref.copy()) == math.inf
    assert sqnr_db(ref, ref + np.array([[0.5, 0.0]])) == pytest.approx(10 * math.log10(25 / 0.25))
    assert sqnr_db(ref, ref * 0) == pytest.approx(0.0)  # noise as strong as the signal
    assert sqnr_db(np.zeros((1, 2)), np.ones((1, 2))) < -200  # no signal at all: very low, finite


def test_compare_logits_agreement_flips_and_differences() -> None:
    ref = np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0], [2.0, 0.0, 1.0]])
    cand = ref.copy()
    cand[1] = [0.0, 1.0, 2.0]  # reference class 1 flips to 2
    cand[3] = [0.0, 0.0, 3.0]  # reference class 0 flips to 2
    out = compare_logits(ref, cand, class_names=("a", "b", "c"))
    assert out["n"] == 4 and out["agreement"] == 0.5
    assert out["flips_per_class"] == {"b": 1, "a": 1}
    assert out["max_abs_diff"] == 2.0 and out["mean_abs_diff"] == pytest.approx(6.0 / 12)
    assert out["top1_ref"] is None and out["top1_delta"] is None  # no labels: no accuracy figures
    assert out["cosine_mean"] < 1.0 and compare_logits(ref, ref)["cosine_mean"] == pytest.approx(1.0)


def test_compare_logits_with_labels_reports_accuracy_of_both_sides() -> None:
    ref = np.eye(3)[[0, 1, 2, 0]] * 3.0
    cand = np.eye(3)[[0, 1, 1, 0]] * 3.0
    labels = np.array([0, 1, 2, 1])
    out = compare_logits(ref, cand, labels)
    assert out["top1_ref"] == 0.75 and out["top1_cand"] == 0.5 and out["top1_delta"] == -0.25
    assert out["top5_ref"] == 1.0 and out["flips_per_class"] == {"2": 1}


def test_compare_logits_refuses_different_shapes() -> None:
    with pytest.raises(ValueError, match="logit shapes differ"):
        compare_logits(np.zeros((2, 3)), np.zeros((2, 4)))
