"""Confidence intervals behind the quality gates (pure Python, no numpy needed).

- `wilson(k, n)`: the Wilson score interval of a proportion (top-1 agreement: k matching images of n).
  Unlike the normal approximation it stays inside [0, 1] and behaves at k = n (0 flips) and small n.
- `paired_difference(both, ref_only, cand_only, neither)`: the interval of the accuracy difference of two
  models scored on the SAME images (Newcombe 1998, method 10: the hybrid score interval built from the two
  Wilson intervals and the correlation of the paired outcomes). Paired, because a candidate that loses one
  image and gains another has the same accuracy: only the discordant images carry information.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95%


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(lower, upper) of the Wilson score interval for k successes in n trials; (0, 1) when n == 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"wilson needs 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denom
    low, high = max(0.0, center - half), min(1.0, center + half)
    return (0.0 if k == 0 else low), (1.0 if k == n else high)  # exact at the edges (no float residue)


def paired_difference(both: int, ref_only: int, cand_only: int, neither: int,
                      z: float = Z95) -> tuple[float, float]:
    """(lower, upper) of accuracy(candidate) - accuracy(reference) on the same images.

    both: images both models get right; ref_only: only the reference; cand_only: only the candidate;
    neither: both wrong. Newcombe's method 10 (hybrid score interval with the phi correlation).
    """
    n = both + ref_only + cand_only + neither
    if n <= 0:
        return -1.0, 1.0
    p_ref, p_cand = (both + ref_only) / n, (both + cand_only) / n
    l_ref, u_ref = wilson(both + ref_only, n, z)
    l_cand, u_cand = wilson(both + cand_only, n, z)
    spread = (both + ref_only) * (cand_only + neither) * (both + cand_only) * (ref_only + neither)
    phi = 0.0 if spread == 0 else (both * neither - ref_only * cand_only) / math.sqrt(spread)
    diff = p_cand - p_ref
    below = (p_cand - l_cand) ** 2 - 2 * phi * (p_cand - l_cand) * (u_ref - p_ref) + (u_ref - p_ref) ** 2
    above = (u_cand - p_cand) ** 2 - 2 * phi * (u_cand - p_cand) * (p_ref - l_ref) + (p_ref - l_ref) ** 2
    return max(-1.0, diff - math.sqrt(max(below, 0.0))), min(1.0, diff + math.sqrt(max(above, 0.0)))
