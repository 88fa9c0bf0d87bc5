"""INT8 quantization: calibrated PTQ (ONNX Runtime QDQ or torchao PT2E), QAT, dynamic INT8, fp16.

`quantize(model, data, QuantConfig(...)) -> QuantResult` writes an artifact whose manifest records
the whole config, the hardware detected, the calibration set (description + sha256), the layers
kept in float and why, and parity on held-out data. A missed accuracy budget (after better
calibration and sensitivity-ranked float fallback) raises QuantBudgetError (exit code 3).
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
