"""Verify an exported artifact against the eager model it came from, on real images, at several batch sizes."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from toolchain.artifact import Artifact
from toolchain.export.config import ExportConfig
from toolchain.inputs import EvalInputs
from toolchain.metrics import compare_logits
from toolchain.runners import get_runner
from toolchain.sources import LoadedModel

log = logging.getLogger(__name__)


def run_batched(runner: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits for all of `x`, fed in chunks of `batch_size` (the last chunk may be smaller)."""
    outs = [runner.infer(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs, axis=0)


def verify_export(eager: LoadedModel, artifact: Artifact, inputs: EvalInputs, config: ExportConfig) -> dict[str, Any]:
    """Max abs logit difference and top-1 agreement per batch size; `passed` when every size meets both."""
    start = time.perf_counter()
    exported = LoadedModel(artifact.spec, f"artifact:{artifact.path}", artifact=artifact)
    x = inputs.x
    with get_runner("torch", eager) as ref_runner:
        reference = run_batched(ref_runner, x, 32)
    runner_name = config.verify_runner
    batches: dict[str, dict[str, Any]] = {}
    with get_runner(runner_name, exported) as runner:
        runner_name = runner.name
        for size in config.verify_batch_sizes:
            candidate = run_batched(runner, x, size)
            stats = compare_logits(reference, candidate, inputs.labels, eager.spec.labels)
            batches[str(size)] = {
                "n": stats["n"],
                "max_abs_diff": stats["max_abs_diff"],
                "mean_abs_diff": stats["mean_abs_diff"],
                "agreement": stats["agreement"],
                "flips_per_class": stats["flips_per_class"],
            }
    worst_diff = max(b["max_abs_diff"] for b in batches.values())
    worst_agreement = min(b["agreement"] for b in batches.values())
    failures = []
    for size, stats in batches.items():
        if stats["max_abs_diff"] > config.atol:
            failures.append(f"batch {size}: max abs logit diff {stats['max_abs_diff']:.3g} > atol {config.atol:g}")
        if stats["agreement"] < config.min_agreement:
            failures.append(f"batch {size}: top-1 agreement {stats['agreement']:.4f} < {config.min_agreement:g}")
    passed = not failures
    summary = (
        f"max abs diff {worst_diff:.3g} (atol {config.atol:g}), top-1 agreement {worst_agreement:.4f} "
        f"(min {config.min_agreement:g}) over {len(x)} images at batch sizes "
        f"{', '.join(batches)} with {runner_name}"
    )
    log.info("verification %s: %s", "passed" if passed else "FAILED", summary)
    return {
        "passed": passed,
        "summary": summary if passed else "; ".join(failures),
        "runner": runner_name,
        "reference": "torch eager",
        "data": inputs.description,
        "n": int(len(x)),
        "atol": config.atol,
        "min_agreement": config.min_agreement,
        "max_abs_diff": worst_diff,
        "agreement": worst_agreement,
        "batches": batches,
        "failures": failures,
        "time_s": round(time.perf_counter() - start, 3),
    }
