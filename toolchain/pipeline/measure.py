"""Bench and parity for every artifact of a pipeline run, against the original eager model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from toolchain.models import LoadedModel
from toolchain.pipeline.config import PipelineConfig
from toolchain.report import write_result, write_text
from toolchain.sources import load_model

log = logging.getLogger(__name__)

# The backend each artifact is measured with in the report (vtool bench covers the rest).
PIPELINE_BACKENDS = {"torch": ["torch"], "onnx": ["onnxruntime"], "pt2": ["pt2"], "torchscript": ["torchscript"],
                     "executorch": ["executorch"], "openvino": ["openvino"]}


def _backends(model: LoadedModel) -> list[str]:
    from toolchain.runners import model_format, runners_for

    wanted = PIPELINE_BACKENDS.get(model_format(model), [])
    if model_format(model) == "onnx" and "openvino" in runners_for(model):
        wanted = [*wanted, "openvino"]
    return wanted


def bench_all(reference: LoadedModel, artifacts: dict[str, Path], config: PipelineConfig,
              out: Path) -> dict[str, Any]:
    """One bench run (one process, one fingerprint) over the reference and every artifact."""
    from toolchain.bench import BenchConfig, benchmark
    from toolchain.report.bench import bench_markdown
    from toolchain.report.plots import bench_plot

    models = [reference, *(load_model(str(path)) for path in artifacts.values())]
    entries: list[dict[str, Any]] = []
    result_dict: dict[str, Any] = {}
    for model in models:
        bench_cfg = BenchConfig(backends=_backends(model), batch_sizes=list(config.batch_sizes),
                                duration_s=config.bench_seconds, threads=config.threads, data=config.data,
                                min_iterations=5)
        result = benchmark([model], bench_cfg)
        result_dict = result.to_dict() if not result_dict else result_dict
        entries += [e.to_dict() for e in result.entries]
    result_dict["entries"] = entries
    json_path = out / "bench.json"
    write_result(json_path, result_dict)
    write_text(out / "bench.md", bench_markdown(result_dict))
    plot = bench_plot(result_dict, out / "bench.png")
    return {"json": str(json_path), "plot": str(plot), "entries": len(entries)}


def parity_all(reference: LoadedModel, artifacts: dict[str, Path], config: PipelineConfig,
               out: Path) -> dict[str, Any]:
    """Parity of every artifact against the reference on the held-out test split (or photo crops)."""
    from toolchain.explain.agree import ExplainParityConfig
    from toolchain.explain.figures import pairs_figure
    from toolchain.parity import ParityConfig, check_parity

    part = "test" if config.data else "val"
    results: dict[str, Any] = {}
    for name, path in artifacts.items():
        candidate = load_model(str(path))
        explain = None  # explanation parity: INT8 artifacts only (fp32 exports compute the same function)
        if config.explain_samples and name.startswith("int8-"):
            explain = ExplainParityConfig(samples=config.explain_samples, threads=config.threads)
        parity_cfg = ParityConfig(data=config.data, split=part, max_drop=config.max_drop,
                                  min_agreement=config.min_agreement, threads=config.threads, gate=config.gate,
                                  explain=explain)
        result = check_parity(reference, candidate, parity_cfg)
        results[name] = result.to_dict()
        if result.explanation is not None:
            ex = result.explanation
            figure = pairs_figure(ex.worst_pairs, "original", name, out / f"explain-{name}.png", ex.method)
            results[name]["explanation"]["figure"] = str(figure)
        log.info("parity %s: agreement %.4f, passed %s", name, results[name]["agreement"], results[name]["passed"])
    json_path = out / "parity.json"
    write_result(json_path, results)
    return {"json": str(json_path), "passed": {k: v["passed"] for k, v in results.items()}}
