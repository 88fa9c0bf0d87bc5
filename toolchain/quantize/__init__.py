"""INT8 quantization: calibrated PTQ (ONNX Runtime QDQ or torchao PT2E), QAT, dynamic INT8, fp16.

`quantize(model, data, QuantConfig(...)) -> QuantResult` writes an artifact whose manifest records
the whole config, the hardware detected, the calibration set (description + sha256), the layers
kept in float and why, and parity on held-out data. A missed accuracy budget (after better
calibration and sensitivity-ranked float fallback) raises QuantBudgetError (exit code 3).
"""

from toolchain.quantize.config import (
    BACKENDS,
    CALIBRATIONS,
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
    "BACKENDS",
    "CALIBRATIONS",
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
