"""Verify an exported artifact against the eager model it came from, on real images, at several batch sizes."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from toolchain.artifact import Artifact
from toolchain.compare import CompareResult
from toolchain.export.config import ExportConfig
from toolchain.inputs import EvalInputs
from toolchain.metrics import compare_logits
from toolchain.models import LoadedModel
from toolchain.runners import get_runner

log = logging.getLogger(__name__)


def _batch_stats(reference: np.ndarray, candidate: np.ndarray, inputs: EvalInputs, eager: LoadedModel) -> dict:
    stats = compare_logits(reference, candidate, inputs.labels, eager.spec.labels)
    keys = ("n", "max_abs_diff", "mean_abs_diff", "agreement", "flips_per_class")
    return {key: stats[key] for key in keys}


def verify_export(eager: LoadedModel, artifact: Artifact, inputs: EvalInputs, config: ExportConfig) -> dict[str, Any]:
    """Max abs logit difference and top-1 agreement per batch size; `passed` when every size meets both."""
    import torch

    start = time.perf_counter()
    exported = LoadedModel(artifact.spec, f"artifact:{artifact.path}", artifact=artifact)
    x = inputs.x
    threads = config.verify_threads
    previous_threads = torch.get_num_threads()  # torch runners set the process-wide count: put it back after
    batches: dict[str, dict[str, Any]] = {}
    try:
        # The eager model; an ONNX source converted to IR runs on OpenVINO too, so the check isolates the conversion
        # (OpenVINO's and ONNX Runtime's INT8 kernels round differently: `vtool parity` compares runtimes).
        ref_backend = "torch" if eager.is_torch else "openvino"
        with get_runner(ref_backend, eager, threads=threads) as ref_runner:
            reference = ref_runner.infer_batched(x, 32)
            reference_name = "torch eager" if eager.is_torch else f"{eager.name} on {ref_runner.name}"
        with get_runner(config.verify_runner, exported, threads=threads) as runner:
            runner_name = runner.name
            for size in config.verify_batch_sizes:
                batches[str(size)] = _batch_stats(reference, runner.infer_batched(x, size), inputs, eager)
    finally:
        torch.set_num_threads(previous_threads)
    worst_diff = max(b["max_abs_diff"] for b in batches.values())
    worst_agreement = min(b["agreement"] for b in batches.values())
    failures = [f"batch {size}: {failure}" for size, stats in batches.items()
                for failure in CompareResult(stats, config.thresholds).check()]
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
        "reference": reference_name,
        "threads": threads,
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
