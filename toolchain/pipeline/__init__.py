"""`vtool pipeline`: the whole chain on one model, one report."""

from toolchain.pipeline.config import STAGES, PipelineConfig
from toolchain.pipeline.run import PipelineResult, run_pipeline

__all__ = ["STAGES", "PipelineConfig", "PipelineResult", "run_pipeline"]
