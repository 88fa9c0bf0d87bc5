"""Explanation parity: run the same heatmap method on a reference and a candidate (same images, same target:
the reference's top-1) and measure how far the evidence moved, per image: Spearman rank correlation of the two
maps and the IoU of their top regions (the top 20% of pixels). Mean and worst over the images."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolchain.errors import UserInputError, check_choice
from toolchain.explain.methods import GRAD_METHODS, METHODS
from toolchain.models import LoadedModel

log = logging.getLogger(__name__)
_REFERENCE_MAPS: dict[str, tuple[np.ndarray, list[int]]] = {}  # the reference's maps, reused across candidates


@dataclass
class ExplainParityConfig:
    """How explanation parity is measured. `samples` images are taken evenly from parity's inputs."""

    samples: int = 16
    method: str = "occlusion"  # gradcam / gradcam++ only when both models are eager torch models
    top_fraction: float = 0.2
    window: int | None = None
    stride: int | None = None
    worst: int = 4  # pairs kept for the side-by-side figure
    backend_ref: str = "auto"
    backend_cand: str = "auto"
    device: str = "cpu"
    threads: int | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_choice("explanation method", self.method, METHODS)
        if self.samples < 1:
            raise UserInputError(f"--explain-samples must be >= 1, got {self.samples}.")
        if not 0.0 < self.top_fraction < 1.0:
            raise UserInputError(f"top_fraction must be in (0, 1), got {self.top_fraction}.")
        if self.worst < 0:
            raise UserInputError(f"worst must be >= 0, got {self.worst}.")


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values, method="average")


def heatmap_agreement(a: np.ndarray, b: np.ndarray, top_fraction: float = 0.2) -> tuple[float, float]:
    """(Spearman rank correlation, IoU of the top `top_fraction` pixels) of two heatmaps of the same shape.
    A top region includes ties at its edge and only pixels above 5% of the map's range, so neither a plateau of
    equal values nor a sparse map's near-zero floor is split by pixel position. Two flat maps agree (1.0, 1.0);
    one flat map against a structured one scores 0."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise UserInputError(f"heatmaps differ in size: {a.shape} vs {b.shape}.")
    flat_a, flat_b = np.ptp(a) == 0, np.ptp(b) == 0
    if flat_a or flat_b:
        return (1.0, 1.0) if flat_a and flat_b else (0.0, 0.0)
    ra, rb = _ranks(a), _ranks(b)
    spearman = float(np.corrcoef(ra, rb)[0, 1])
    k = max(1, int(round(top_fraction * a.size)))
    # the top region: every pixel at least as strong as the k-th strongest (ties included, so a plateau of equal
    # values is never split by position), and only evidence: pixels near the map's floor never count
    top_a = (a >= np.partition(a, -k)[-k]) & (a > a.min() + 0.05 * np.ptp(a))
    top_b = (b >= np.partition(b, -k)[-k]) & (b > b.min() + 0.05 * np.ptp(b))
    union = (top_a | top_b).sum()
    iou = float((top_a & top_b).sum() / union) if union else 1.0
    return spearman, iou


@dataclass
class ExplanationParity:
    """Per-image agreement of two models' heatmaps, and the worst pairs (kept in memory for the figure)."""

    method: str
    indices: list[int]
    targets: list[int]
    spearman: list[float]
    iou: list[float]
    reference: str = ""
    candidate: str = ""
    top_fraction: float = 0.2
    worst_pairs: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def summary(self) -> dict[str, float]:
        s, i = np.asarray(self.spearman), np.asarray(self.iou)
        return {"spearman_mean": float(s.mean()), "spearman_worst": float(s.min()), "iou_mean": float(i.mean()),
                "iou_worst": float(i.min())}

    def to_dict(self) -> dict[str, Any]:
        per_image = [{"index": int(n), "target": int(t), "spearman": round(s, 4), "iou": round(u, 4)}
                     for n, t, s, u in zip(self.indices, self.targets, self.spearman, self.iou, strict=True)]
        return {"method": self.method, "n": len(self.indices), **{k: round(v, 4) for k, v in self.summary.items()},
                "top_fraction": self.top_fraction, "worst": [p["index"] for p in self.worst_pairs],
                "per_image": per_image}


def _key(model: LoadedModel, x: np.ndarray, config: ExplainParityConfig) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    digest.update(repr((model.name, model.origin, model.origin_sha256, config.method, config.window, config.stride,
                        config.backend_ref)).encode())
    return digest.hexdigest()


def _maps(model: LoadedModel, backend: str, x: np.ndarray, targets: list[int] | None,
          config: ExplainParityConfig) -> tuple[np.ndarray, list[int]]:
    from toolchain.explain.core import ExplainConfig, heatmaps
    from toolchain.runners import get_runner

    explain_cfg = ExplainConfig(method=config.method, window=config.window, stride=config.stride, runner=backend,
                                device=config.device, threads=config.threads, batch_size=config.batch_size, out=None)
    with get_runner(backend, model, device=config.device, threads=config.threads) as runner:
        if targets is None:
            targets = [int(t) for t in np.argmax(runner.infer_batched(x, config.batch_size), axis=1)]
        maps, _ = heatmaps(model, x, targets, explain_cfg.resolve_method(model), explain_cfg, runner)
    return maps, targets


def explanation_parity(reference: LoadedModel, candidate: LoadedModel, x: np.ndarray,
                       config: ExplainParityConfig | None = None) -> ExplanationParity:
    """Heatmaps of both models on `config.samples` images of `x` (evenly spaced), explaining the reference's
    top-1 class on both; see the module docstring for the two measures."""
    from toolchain.explain.figures import to_display

    config = config or ExplainParityConfig()
    if config.method in GRAD_METHODS and not (reference.is_torch and candidate.is_torch):
        raise UserInputError(f"--explain-method {config.method} needs gradients from both models; "
                             f"{candidate.name if reference.is_torch else reference.name} is an exported artifact: "
                             "use occlusion (forward-only, any backend).")
    indices = np.unique(np.linspace(0, len(x) - 1, min(config.samples, len(x))).round().astype(int)).tolist()
    xs = np.ascontiguousarray(x[indices])
    key = _key(reference, xs, config)
    if key not in _REFERENCE_MAPS:
        _REFERENCE_MAPS.clear()
        _REFERENCE_MAPS[key] = _maps(reference, config.backend_ref, xs, None, config)
    ref_maps, targets = _REFERENCE_MAPS[key]
    cand_maps, _ = _maps(candidate, config.backend_cand, xs, targets, config)
    scores = [heatmap_agreement(a, b, config.top_fraction) for a, b in zip(ref_maps, cand_maps, strict=True)]
    result = ExplanationParity(config.method, indices, targets, [s for s, _ in scores], [u for _, u in scores],
                               reference.name, candidate.name, config.top_fraction)
    labels = reference.spec.labels
    for j in np.argsort([s + u for s, u in scores], kind="stable")[:config.worst]:
        result.worst_pairs.append({"index": indices[j], "target_label": labels[targets[j]], "spearman": scores[j][0],
                                   "iou": scores[j][1], "image": to_display(xs[j], reference.spec),
                                   "ref_map": ref_maps[j], "cand_map": cand_maps[j]})
    log.info("explanation parity %s vs %s (%s, %d images): Spearman mean %.3f worst %.3f, IoU mean %.3f worst %.3f",
             reference.name, candidate.name, config.method, len(indices), *result.summary.values())
    return result
