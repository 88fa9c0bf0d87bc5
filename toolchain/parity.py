"""Parity: does a candidate (export, quantized model, damaged copy...) still answer like its reference?

ParityConfig -> check_parity(reference, candidate, config) -> ParityResult. Both models run through
Runners on the same real images, preprocessed with the REFERENCE's spec; the logits are compared
with metrics.compare_logits. Like Polygraphy's OutputCompareResult, a ParityResult is truthy when
every threshold holds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolchain.artifact import MANIFEST, Manifest, is_artifact_dir, save_manifest
from toolchain.errors import ArtifactError, ThresholdError, UserInputError
from toolchain.inputs import evaluation_inputs
from toolchain.metrics import compare_logits
from toolchain.models import LoadedModel
from toolchain.runners import get_runner

log = logging.getLogger(__name__)

PARTS = ("train", "val", "test")
RESULT_KEYS = ("n", "top1_ref", "top1_cand", "top1_delta", "top5_ref", "top5_cand", "agreement", "cosine_mean",
               "max_abs_diff", "sqnr_db", "flips_per_class", "thresholds", "passed")


@dataclass
class ParityConfig:
    """Thresholds and inputs of `vtool parity`. `max_drop` is in accuracy points (0.01 = 1 point)."""

    data: str | None = None  # None -> the reference's recorded data, else bundled photos (ImageNet models)
    max_drop: float = 0.01
    min_agreement: float = 0.99
    max_abs_diff: float | None = None  # optional extra gate on the largest logit difference
    limit: int | None = None
    part: str = "val"
    backend_ref: str = "auto"
    backend_cand: str = "auto"
    device: str = "cpu"
    threads: int | None = None
    batch_size: int = 32
    photos: int = 200
    record: bool = True  # append the result to the candidate artifact's manifest.parity

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_drop <= 1.0:
            raise UserInputError(f"--max-drop {self.max_drop} must be between 0 and 1 (0.01 = one accuracy point).")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise UserInputError(f"--min-agreement {self.min_agreement} must be between 0 and 1, e.g. 0.99.")
        if self.max_abs_diff is not None and self.max_abs_diff < 0:
            raise UserInputError(f"--max-abs-diff must be >= 0, got {self.max_abs_diff}.")
        if self.limit is not None and self.limit < 1:
            raise UserInputError(f"--limit must be >= 1 image, got {self.limit}.")
        if self.part not in PARTS:
            raise UserInputError(f"Unknown split '{self.part}': expected one of {', '.join(PARTS)}.")
        if self.batch_size < 1:
            raise UserInputError(f"--batch-size must be >= 1, got {self.batch_size}.")
        if self.photos < 1:
            raise UserInputError(f"photos must be >= 1, got {self.photos}.")

    @property
    def thresholds(self) -> dict[str, Any]:
        return {"max_drop": self.max_drop, "min_agreement": self.min_agreement, "max_abs_diff": self.max_abs_diff}


@dataclass
class ParityResult:
    """Metrics (DESIGN.md section 4 keys), the thresholds, and why it failed (empty when it passed)."""

    metrics: dict[str, Any]
    thresholds: dict[str, Any]
    failures: list[str]
    reference: dict[str, Any] = field(default_factory=dict)
    candidate: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    time_s: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    def __bool__(self) -> bool:
        return self.passed

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    @property
    def flipped_classes(self) -> list[str]:
        return list(self.metrics.get("flips_per_class", {}))

    def to_dict(self) -> dict[str, Any]:
        out = {key: self.metrics.get(key) for key in RESULT_KEYS if key not in ("thresholds", "passed")}
        out.update(self.metrics)
        out["thresholds"] = dict(self.thresholds)
        out["passed"] = self.passed
        out["failures"] = list(self.failures)
        out["reference"] = dict(self.reference)
        out["candidate"] = dict(self.candidate)
        out["data"] = dict(self.data)
        out["time_s"] = self.time_s
        return out

    def message(self) -> str:
        """One line: what failed and which classes flipped (most flips first)."""
        if self.passed:
            return f"parity passed: agreement {self.metrics['agreement']:.4f} on {self.metrics['n']} images"
        flips = self.metrics.get("flips_per_class", {})
        flipped = ", ".join(f"{name} ({count})" for name, count in list(flips.items())[:8])
        more = f" and {len(flips) - 8} more" if len(flips) > 8 else ""
        named = f"; flipped classes: {flipped}{more}" if flips else ""
        return f"parity failed for {self.candidate.get('name', 'candidate')}: {'; '.join(self.failures)}{named}."

    def check(self) -> ParityResult:
        """Raise ThresholdError (exit code 3) with message() when a threshold was not met."""
        if not self.passed:
            raise ThresholdError(self.message())
        return self


def _logits(model: LoadedModel, backend: str, x: np.ndarray, config: ParityConfig) -> tuple[np.ndarray, str]:
    with get_runner(backend, model, device=config.device, threads=config.threads) as runner:
        outs = [runner.infer(x[i : i + config.batch_size]) for i in range(0, len(x), config.batch_size)]
        return np.concatenate(outs, axis=0), runner.name


def _check_compatible(reference: LoadedModel, candidate: LoadedModel) -> None:
    ref, cand = reference.spec, candidate.spec
    if ref.num_classes != cand.num_classes:
        raise UserInputError(
            f"Cannot compare {reference.name} ({ref.num_classes} classes) with {candidate.name} "
            f"({cand.num_classes} classes): parity needs the same label set."
        )
    if (ref.channels, *ref.input_size) != (cand.channels, *cand.input_size):
        raise UserInputError(
            f"Cannot compare {reference.name} (input {ref.channels}x{ref.input_size}) with {candidate.name} "
            f"(input {cand.channels}x{cand.input_size}): parity feeds both the same images."
        )
    if ref.class_names and cand.class_names and ref.class_names != cand.class_names:
        log.warning("reference and candidate name their classes differently; using the reference's names")
    if ref.mean != cand.mean or ref.std != cand.std:
        log.warning("reference and candidate record different normalization; using the reference's")
    ref_origin, cand_origin = origin_hash(reference), origin_hash(candidate)
    if candidate.artifact is not None and ref_origin and cand_origin and ref_origin != cand_origin:
        hint = ("; registry models without pretrained weights are random on every load"
                if reference.origin.startswith("registry:") else "")
        log.warning("%s was made from a model with sha256 %s..., not from %s's (%s...)%s", candidate.name,
                    cand_origin[:12], reference.name, ref_origin[:12], hint)


def origin_hash(model: LoadedModel) -> str:
    """sha256 of the original weights a model descends from (artifacts record it through every stage)."""
    return model.origin_sha256


def check_parity(reference: LoadedModel, candidate: LoadedModel, config: ParityConfig) -> ParityResult:
    """Run both models on the same real images (reference preprocessing) and gate on the thresholds."""
    start = time.perf_counter()
    _check_compatible(reference, candidate)
    inputs = evaluation_inputs(reference, config.data, part=config.part, limit=config.limit,
                               photos=config.photos, spec=reference.spec)
    log.info("parity: %s vs %s on %d images", reference.name, candidate.name, len(inputs.x))
    ref_logits, ref_runner = _logits(reference, config.backend_ref, inputs.x, config)
    cand_logits, cand_runner = _logits(candidate, config.backend_cand, inputs.x, config)
    metrics = compare_logits(ref_logits, cand_logits, inputs.labels, reference.spec.labels)
    failures = []
    if metrics["top1_delta"] is not None and -metrics["top1_delta"] > config.max_drop + 1e-12:
        failures.append(
            f"top-1 fell {-metrics['top1_delta']:.4f} ({metrics['top1_ref']:.4f} -> {metrics['top1_cand']:.4f}), "
            f"more than --max-drop {config.max_drop:g}"
        )
    if metrics["agreement"] < config.min_agreement:
        failures.append(f"top-1 agreement {metrics['agreement']:.4f} < --min-agreement {config.min_agreement:g}")
    if config.max_abs_diff is not None and metrics["max_abs_diff"] > config.max_abs_diff:
        failures.append(f"max abs logit diff {metrics['max_abs_diff']:.3g} > {config.max_abs_diff:g}")
    result = ParityResult(
        metrics=metrics,
        thresholds=config.thresholds,
        failures=failures,
        reference={**reference.describe(), "name": reference.name, "runner": ref_runner},
        candidate={**candidate.describe(), "name": candidate.name, "runner": cand_runner},
        data={k: v for k, v in inputs.description.items() if k != "split"},
        time_s=round(time.perf_counter() - start, 3),
    )
    log.info("parity %s: agreement %.4f, max abs diff %.3g", "passed" if result else "FAILED",
             metrics["agreement"], metrics["max_abs_diff"])
    if config.record:
        record_parity(candidate, result)
    return result


def record_parity(candidate: LoadedModel, result: ParityResult) -> bool:
    """Append the result to the candidate artifact's manifest.parity (re-read first, saved atomically)."""
    artifact = candidate.artifact
    if artifact is None or not is_artifact_dir(artifact.path):
        return False
    try:
        data = json.loads((artifact.path / MANIFEST).read_text())
        manifest = Manifest(**{k: v for k, v in data.items() if k in Manifest.__dataclass_fields__})
    except (OSError, ValueError, TypeError, ArtifactError) as exc:
        log.warning("could not record parity in %s: %s", artifact.path, exc)
        return False
    entry = jsonable(result.to_dict())
    entry["recorded"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest.parity.append(entry)
    artifact.manifest = manifest
    save_manifest(artifact)
    return True


def jsonable(value: Any) -> Any:
    """Strict-JSON form: non-finite floats (an identical pair has SQNR inf) become the strings 'inf'/'nan'."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return jsonable(value.item())
    return value


__all__ = ["RESULT_KEYS", "ParityConfig", "ParityResult", "check_parity", "jsonable", "record_parity"]
