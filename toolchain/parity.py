"""Parity: does a candidate (export, quantized model, damaged copy...) still answer like its reference?

ParityConfig -> check_parity(reference, candidate, config) -> ParityResult. Both models run through
Runners on the same real images, preprocessed with the REFERENCE's spec; the logits are compared
with metrics.compare_logits and gated by compare.Thresholds: a ParityResult is a CompareResult, truthy
when every threshold holds. It is returned either way; `vtool parity` turns a failed one into exit 3.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np

from toolchain.artifact import MANIFEST, Manifest, is_artifact_dir, save_manifest
from toolchain.compare import CompareResult, Thresholds
from toolchain.data import PARTS
from toolchain.distributed.config import rank_threads
from toolchain.distributed.runtime import Dist, current
from toolchain.distributed.shard import Batches, array_batches, bundle_batches, infer_shards
from toolchain.errors import ArtifactError, UserInputError, renamed_field
from toolchain.inputs import evaluation_inputs, resolve_bundle
from toolchain.metrics import compare_logits
from toolchain.models import LoadedModel
from toolchain.report import jsonable
from toolchain.runners import get_runner

log = logging.getLogger(__name__)

RESULT_KEYS = ("n", "top1_ref", "top1_cand", "top1_delta", "top5_ref", "top5_cand", "agreement", "agreement_ci",
               "flips", "cosine_mean", "max_abs_diff", "sqnr_db", "flips_per_class", "thresholds", "passed", "gate")


@dataclass
class ParityConfig:
    """Thresholds and inputs of `vtool parity`. `max_drop` is in accuracy points (0.01 = 1 point)."""

    data: str | None = None  # None -> the reference's recorded data, else bundled photos (ImageNet models)
    max_drop: float = 0.01
    min_agreement: float = 0.99
    max_abs_diff: float | None = None  # optional extra gate on the largest logit difference
    limit: int | None = None
    split: str = "val"
    backend_ref: str = "auto"
    backend_cand: str = "auto"
    device: str = "cpu"
    threads: int | None = None
    batch_size: int = 32
    photos: int = 200
    workers: int = 0  # DataLoader processes decoding images (0: this process)
    record: bool = True  # append the result to the candidate artifact's manifest.parity
    split_file: str | None = None  # the user's own split of `data` (datasplit.read_split_file)
    test_data: str | None = None  # a holdout folder: the test split
    gate: str = "ci"  # compare.RULES: "ci" (fail only on evidence of a miss) or "observed"
    explain: Any = None  # an explain.agree.ExplainParityConfig: also compare heatmaps (result.explanation)
    part: InitVar[str | None] = None  # deprecated name of `split`

    def __post_init__(self, part: str | None) -> None:
        renamed_field(self, "part", "split", part)
        self.thresholds  # noqa: B018 - validates the three limits in one place (compare.Thresholds)
        if self.limit is not None and self.limit < 1:
            raise UserInputError(f"--limit must be >= 1 image, got {self.limit}.")
        if self.split not in PARTS:
            raise UserInputError(f"Unknown split '{self.split}': expected one of {', '.join(PARTS)}.")
        if self.batch_size < 1:
            raise UserInputError(f"--batch-size must be >= 1, got {self.batch_size}.")
        if self.workers < 0:
            raise UserInputError(f"--workers must be >= 0, got {self.workers}.")
        if self.photos < 1:
            raise UserInputError(f"photos must be >= 1, got {self.photos}.")

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.max_drop, self.min_agreement, self.max_abs_diff, self.gate)


@dataclass
class ParityResult(CompareResult):
    """Metrics (DESIGN.md section 4 keys) held to the thresholds, plus what was compared on which data."""

    reference: dict[str, Any] = field(default_factory=dict)
    candidate: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    time_s: float = 0.0
    explanation: Any = None  # explain.agree.ExplanationParity when ParityConfig.explain was set

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    @property
    def flipped_classes(self) -> list[str]:
        return list(self.metrics.get("flips_per_class", {}))

    def to_dict(self) -> dict[str, Any]:
        out = {key: self.metrics.get(key) for key in RESULT_KEYS if key not in ("thresholds", "passed", "gate")}
        out.update(self.metrics)
        out["thresholds"] = self.thresholds.to_dict()
        out["passed"] = self.passed
        out["failures"] = self.failures
        out["gate"] = {"rule": self.thresholds.rule, "statement": self.thresholds.statement, "notes": self.notes}
        out["reference"] = dict(self.reference)
        out["candidate"] = dict(self.candidate)
        out["data"] = dict(self.data)
        out["time_s"] = self.time_s
        if self.explanation is not None:
            out["explanation"] = self.explanation.to_dict()
        return out

    def message(self) -> str:
        """One line: what failed and which classes flipped (most flips first)."""
        if self.passed:
            m = self.metrics
            ci = m.get("agreement_ci") or (m["agreement"], m["agreement"])
            return (f"parity passed: agreement {m['agreement']:.4f} (95% CI [{ci[0]:.3f}, {ci[1]:.3f}], "
                    f"{m.get('flips', 0)} flips of {m['n']} images)" + ("; inconclusive" if self.notes else ""))
        flips = self.metrics.get("flips_per_class", {})
        flipped = ", ".join(f"{name} ({count})" for name, count in list(flips.items())[:8])
        more = f" and {len(flips) - 8} more" if len(flips) > 8 else ""
        named = f"; flipped classes: {flipped}{more}" if flips else ""
        return f"parity failed for {self.candidate.get('name', 'candidate')}: {'; '.join(self.failures)}{named}."


def _inputs(reference: LoadedModel, config: ParityConfig, dist: Dist) -> tuple[Batches, int, dict[str, Any]]:
    """This rank's batches of real images (a data split streamed from disk, or the bundled photo crops), how many
    batches all ranks run together, and what the images are."""
    bundle = resolve_bundle(reference, config.data, reference.spec, split_file=config.split_file,
                            test_data=config.test_data)
    if bundle is not None:
        indices = bundle.subset(config.split, config.limit)
        if not indices:
            raise UserInputError(f"The '{config.split}' split of {bundle.samples.source} is empty.")
        batches, total = bundle_batches(bundle, indices, config.batch_size, dist, config.workers)
        return batches, total, {**bundle.describe(), "part": config.split, "n": len(indices)}
    inputs = evaluation_inputs(reference, config.data, part=config.split, limit=config.limit,
                               photos=config.photos, spec=reference.spec, split_file=config.split_file,
                               test_data=config.test_data)
    batches, total = array_batches(inputs.x, inputs.labels, config.batch_size, dist)
    return batches, total, inputs.description


def _explain_images(reference: LoadedModel, config: ParityConfig) -> np.ndarray:
    """The images explanation parity explains: `explain.samples` evenly spaced over parity's images, read on
    their own (parity streams its split and never holds it all in memory)."""
    bundle = resolve_bundle(reference, config.data, reference.spec, split_file=config.split_file,
                            test_data=config.test_data)
    if bundle is None:
        return evaluation_inputs(reference, config.data, part=config.split, limit=config.limit, photos=config.photos,
                                 spec=reference.spec, split_file=config.split_file, test_data=config.test_data).x
    from toolchain.loaders import stream

    indices = bundle.subset(config.split, config.limit)
    spaced = np.linspace(0, len(indices) - 1, min(config.explain.samples, len(indices))).round().astype(int)
    picked = [indices[i] for i in np.unique(spaced)]
    return np.concatenate([np.asarray(x) for x, _ in stream(bundle, [picked])])


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


def check_parity(reference: LoadedModel | str, candidate: LoadedModel | str,
                 config: ParityConfig | None = None) -> ParityResult:
    """Run both models (LoadedModels or --model sources) on the same real images, with the reference's
    preprocessing, and hold the candidate to the thresholds; the result is returned whether it passed or not."""
    from toolchain.sources import as_loaded

    config = config or ParityConfig()
    reference, candidate = as_loaded(reference), as_loaded(candidate)
    start = time.perf_counter()
    _check_compatible(reference, candidate)
    dist = current(config.device)
    threads = config.threads or (rank_threads() if dist.distributed else None)
    with dist.guard():
        batches, total, description = _inputs(reference, config, dist)
        log.info("parity: %s vs %s on %d images%s", reference.name, candidate.name, description["n"],
                 f" ({dist.world_size} processes)" if dist.distributed else "")
        with get_runner(config.backend_ref, reference, device=config.device, threads=threads) as ref_runner, \
                get_runner(config.backend_cand, candidate, device=config.device, threads=threads) as cand_runner:
            gathered = infer_shards([ref_runner, cand_runner], batches, total, dist, reference.spec.num_classes)
            ref_name, cand_name = ref_runner.name, cand_runner.name
        if gathered is None:  # a torchrun worker other than rank 0: rank 0 compares and records
            return dist.broadcast(None)
    (ref_logits, cand_logits), labels = gathered
    metrics = compare_logits(ref_logits, cand_logits, labels, reference.spec.labels)
    result = ParityResult(
        metrics=metrics,
        thresholds=config.thresholds,
        reference={**reference.describe(), "name": reference.name, "runner": ref_name},
        candidate={**candidate.describe(), "name": candidate.name, "runner": cand_name},
        data={k: v for k, v in description.items() if k != "split"},
        time_s=round(time.perf_counter() - start, 3),
    )
    if config.explain is not None:
        from toolchain.explain.agree import explanation_parity

        result.explanation = explanation_parity(reference, candidate, _explain_images(reference, config),
                                                 config.explain)
    log.info("parity %s: agreement %.4f, max abs diff %.3g", "passed" if result else "FAILED",
             metrics["agreement"], metrics["max_abs_diff"])
    if config.record:
        record_parity(candidate, result)
    with dist.guard():
        return dist.broadcast(result)


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


__all__ = ["RESULT_KEYS", "ParityConfig", "ParityResult", "check_parity", "record_parity"]
