"""Logit comparison math shared by parity, export verification and quantization (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from toolchain.stats import paired_difference, wilson


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (higher is closer; inf when identical)."""
    noise = float(np.sum((reference.astype(np.float64) - candidate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(max(signal, 1e-30) / noise))


def compare_logits(
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: np.ndarray | None = None,
    class_names: tuple[str, ...] | list[str] = (),
) -> dict[str, Any]:
    """Accuracy of each side (when labels exist), top-1 agreement with its Wilson 95% interval, cosine, max abs
    diff, SQNR, flips (images whose top-1 changed), and with labels the paired interval of the top-1 change."""
    if reference.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: reference {reference.shape} vs candidate {candidate.shape}")
    ref_top1, cand_top1 = reference.argmax(1), candidate.argmax(1)
    names = list(class_names) or [str(i) for i in range(reference.shape[1])]
    ref64, cand64 = reference.astype(np.float64), candidate.astype(np.float64)
    norms = np.linalg.norm(ref64, axis=1) * np.linalg.norm(cand64, axis=1)
    cosine = np.sum(ref64 * cand64, axis=1) / np.maximum(norms, 1e-30)
    flips: dict[str, int] = {}
    for ref_class in ref_top1[ref_top1 != cand_top1]:
        key = names[ref_class] if ref_class < len(names) else str(ref_class)
        flips[key] = flips.get(key, 0) + 1
    n = int(reference.shape[0])
    agree = int(np.sum(ref_top1 == cand_top1))
    result: dict[str, Any] = {
        "n": n,
        "agreement": agree / n if n else 0.0,
        "agreement_ci": list(wilson(agree, n)),
        "flips": n - agree,
        "cosine_mean": float(np.mean(cosine)),
        "max_abs_diff": float(np.max(np.abs(ref64 - cand64))) if reference.size else 0.0,
        "mean_abs_diff": float(np.mean(np.abs(ref64 - cand64))) if reference.size else 0.0,
        "sqnr_db": sqnr_db(reference, candidate),
        "flips_per_class": dict(sorted(flips.items(), key=lambda kv: -kv[1])),
        "top1_ref": None, "top1_cand": None, "top1_delta": None, "top1_delta_ci": None, "top5_ref": None,
        "top5_cand": None,
    }
    if labels is not None and len(labels):
        result["top1_ref"] = topk_accuracy(reference, labels, 1)
        result["top1_cand"] = topk_accuracy(candidate, labels, 1)
        result["top1_delta"] = result["top1_cand"] - result["top1_ref"]
        ref_ok, cand_ok = ref_top1 == labels, cand_top1 == labels
        paired = {"both": int(np.sum(ref_ok & cand_ok)), "ref_only": int(np.sum(ref_ok & ~cand_ok)),
                  "cand_only": int(np.sum(~ref_ok & cand_ok)), "neither": int(np.sum(~ref_ok & ~cand_ok))}
        result["paired"] = paired
        result["top1_delta_ci"] = list(paired_difference(**paired))
        result["top5_ref"] = topk_accuracy(reference, labels, 5)
        result["top5_cand"] = topk_accuracy(candidate, labels, 5)
    return result
