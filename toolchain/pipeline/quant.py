"""The pipeline's quantization step: `vtool quantize` with the run's data and budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolchain.models import LoadedModel
from toolchain.pipeline.config import PipelineConfig


def run_quantization(reference: LoadedModel, onnx_dir: Path, mode: str, dest: Path,
                     config: PipelineConfig) -> dict[str, Any]:
    """PTQ quantizes the exported fp32 ONNX; QAT fine-tunes the eager model (it needs the checkpoint)."""
    from toolchain.quantize import QuantConfig, quantize
    from toolchain.sources import load_model

    source = load_model(str(onnx_dir)) if mode == "ptq" else reference
    # The same gates as the parity stage: accuracy drop (labelled data only) and top-1 agreement.
    labelled = config.data is not None
    quant_cfg = QuantConfig(mode=mode, samples=config.samples, epochs=config.qat_epochs,
                            max_drop=config.max_drop if labelled else None, min_agreement=config.min_agreement,
                            threads=config.threads, seed=config.seed, overwrite=True)  # the run's own artifact
    result = quantize(source, config.data, quant_cfg, out=dest)
    summary = {k: v for k, v in result.to_dict().items() if k != "attempts"}
    return {**summary, "path": str(dest), "attempts": len(result.attempts)}
