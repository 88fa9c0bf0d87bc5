"""Activation ranges for uint8 per-tensor quantization, chosen from calibration histograms.

Methods: `minmax` (the observed range), `percentile` (clip the rarest outliers) and `mse` (the range
whose uint8 quantize-dequantize error over the calibration values is smallest: clipping error of
the outliers against rounding error of everything else, as NNCF/OpenVINO's MSE range estimator and
AIMET's TF-enhanced scheme do). `entropy` ranges come from ONNX Runtime's own calibrator.
Measured on EfficientNet-Lite0 (activations only, 62 tensors, judging photos): minmax 19.6 dB logit
SQNR, MSE 22.3 dB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

BINS = 2048
MAX_VALUES = 1 << 18  # values per tensor and batch that enter the histogram
LEVELS = 255  # uint8


class Histogram:
    """A running histogram whose range grows with the data (the counts are re-binned when it does)."""

    def __init__(self) -> None:
        self.lo = 0.0
        self.hi = 0.0
        self.counts: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return self.counts is None

    def add(self, values: np.ndarray) -> None:
        flat = np.asarray(values, dtype=np.float32).ravel()
        if flat.size > MAX_VALUES:  # an evenly strided sample keeps the shape of the distribution, min and max
            extremes = flat[[int(np.argmin(flat)), int(np.argmax(flat))]]
            flat = np.concatenate([flat[:: flat.size // MAX_VALUES + 1], extremes])
        flat = flat[np.isfinite(flat)]
        if not flat.size:
            return
        lo, hi = float(flat.min()), float(flat.max())
        if self.counts is None:
            # a constant (or near-constant) tensor still needs BINS distinct edges at its magnitude
            self.lo, self.hi = lo, max(hi, lo + max(1e-6, abs(lo) * 1e-3))
            self.counts = np.histogram(flat, BINS, (self.lo, self.hi))[0].astype(np.float64)
            return
        if lo < self.lo or hi > self.hi:
            new_lo, new_hi = min(lo, self.lo), max(hi, self.hi)
            self.counts = np.histogram(self.centers(), BINS, (new_lo, new_hi), weights=self.counts)[0]
            self.lo, self.hi = new_lo, new_hi
        self.counts += np.histogram(flat, BINS, (self.lo, self.hi))[0]

    def centers(self) -> np.ndarray:
        edges = np.linspace(self.lo, self.hi, BINS + 1)
        return (edges[:-1] + edges[1:]) / 2


def uint8_params(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point of a uint8 range (widened to hold 0 exactly, as ONNX requires)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / LEVELS or 1.0
    return scale, int(np.clip(np.round(-lo / scale), 0, LEVELS))


def quant_error(centers: np.ndarray, counts: np.ndarray, lo: float, hi: float) -> float:
    """Mean squared uint8 quantize-dequantize error of the histogram's values for range [lo, hi]."""
    scale, zero = uint8_params(lo, hi)
    q = np.clip(np.round(centers / scale) + zero, 0, LEVELS)
    deq = (q - zero) * scale
    inside = (centers >= lo) & (centers <= hi)
    # rounding error of a value inside a bin is ~uniform: scale^2/12 on top of the bin centre's own error
    err = (centers - deq) ** 2 + inside * scale ** 2 / 12.0
    return float(np.sum(counts * err) / max(float(counts.sum()), 1.0))


def mse_range(hist: Histogram, steps: int = 80) -> tuple[float, float]:
    """The clipped range with the least quantization MSE (searched over shrinking upper/lower bounds)."""
    centers, counts = hist.centers(), hist.counts
    best, best_err = (hist.lo, hist.hi), quant_error(centers, counts, hist.lo, hist.hi)
    lower_factors = [1.0] if hist.lo >= 0 else np.linspace(0.1, 1.0, 19)
    for upper in np.linspace(0.1, 1.0, steps):
        for lower in lower_factors:
            lo, hi = hist.lo * lower, hist.hi * upper
            err = quant_error(centers, counts, lo, hi)
            if err < best_err:
                best, best_err = (lo, hi), err
    return best


def percentile_range(hist: Histogram, percentile: float) -> tuple[float, float]:
    """Drop (100 - percentile)% of the values, split between both tails (one tail when all >= 0)."""
    cdf = np.cumsum(hist.counts) / max(float(hist.counts.sum()), 1.0)
    centers = hist.centers()
    tail = (100.0 - percentile) / 100.0
    if hist.lo >= 0:
        return hist.lo, float(centers[min(np.searchsorted(cdf, 1.0 - tail), len(centers) - 1)])
    lo = float(centers[min(np.searchsorted(cdf, tail / 2), len(centers) - 1)])
    hi = float(centers[min(np.searchsorted(cdf, 1.0 - tail / 2), len(centers) - 1)])
    return lo, hi


def choose_range(hist: Histogram, method: str, percentile: float = 99.99) -> tuple[float, float]:
    if hist.empty:
        return 0.0, 1.0
    if method == "minmax":
        return hist.lo, hist.hi
    if method == "percentile":
        return percentile_range(hist, percentile)
    return mse_range(hist)


def ort_ranges(model: Path, data: Any, method: str, op_types: list[str] | None,
               workdir: Path) -> dict[str, tuple[float, float]]:
    """Ranges from ONNX Runtime's own calibrator (entropy: TensorRT-style KL divergence).

    Batches are fed one per collect_data call, so the histogram calibrator holds one batch of
    activations at a time instead of every activation of every image.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    from toolchain.quantize.calib import HashingBatches
    from toolchain.quantize.prep import input_name_and_shape

    name = input_name_and_shape(model)[0]
    calibrator = create_calibrator(model, op_types, augmented_model_path=str(workdir / "ort-augmented.onnx"),
                                   calibrate_method={"entropy": CalibrationMethod.Entropy}[method])
    for batch in HashingBatches(data):
        calibrator.collect_data(_OneBatch({name: batch}))
    tensors = calibrator.compute_data()
    return {key: (float(np.ravel(value.range_value[0])[0]), float(np.ravel(value.range_value[1])[0]))
            for key, value in tensors.data.items()}


class _OneBatch:
    """A CalibrationDataReader over exactly one batch."""

    def __init__(self, batch: dict[str, np.ndarray]) -> None:
        self.batch: dict[str, np.ndarray] | None = batch

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch, self.batch = self.batch, None
        return batch
