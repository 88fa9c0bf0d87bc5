"""INT8 quantization: vtool's static PTQ on ONNX (QDQ for ONNX Runtime and OpenVINO), torchao PT2E PTQ,
QAT (on labels, or distilled from fp32 without labels), dynamic INT8, fp16.

Static PTQ is a chain of switchable steps (ptq.py): SmoothQuant and the transformer preset,
cross-layer equalization, one calibration pass, MSE activation ranges, GPTQ weight reconstruction,
bias correction; then a search (search.py) that keeps the layers the probes rank most damaging in
float only while INT8 stays faster than fp32. `quantize(model, data, QuantConfig(...)) ->
QuantResult` writes an artifact whose manifest records every step, the hardware, the calibration set
(description + sha256), every candidate, the layers kept float and why, and parity on images
disjoint from calibration. A missed budget raises QuantBudgetError (exit code 3).
"""

from toolchain import callable_module
from toolchain.quantize.config import (
    CALIBRATIONS,
    ENGINES,
    MODES,
    PRESETS,
    TARGETS,
    HardwareProfile,
    QuantConfig,
    hardware_profile,
)
from toolchain.quantize.core import QuantBudgetError, QuantResult, source_precision
from toolchain.quantize.stage import quantize

__all__ = [
    "CALIBRATIONS",
    "ENGINES",
    "MODES",
    "PRESETS",
    "TARGETS",
    "HardwareProfile",
    "QuantBudgetError",
    "QuantConfig",
    "QuantResult",
    "hardware_profile",
    "quantize",
    "source_precision",
]

callable_module(__name__, quantize)  # `from toolchain import quantize; quantize(...)` calls the function
