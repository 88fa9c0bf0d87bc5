"""Export: ExportConfig -> export_model() -> ExportResult (a verified artifact directory).

Formats: ONNX (dynamo exporter, one self-contained file, dynamic batch), torch.export `.pt2`,
TorchScript (deprecated upstream, traced). Every export is checked against the eager model.
"""

from toolchain.export.config import DEFAULT_OPSET, EXPORTERS, FORMATS, OPSET_RANGES, ExportConfig
from toolchain.export.core import ExportResult, ExportVerificationError, default_out_dir, export_model
from toolchain.export.formats import operator_name

__all__ = [
    "DEFAULT_OPSET",
    "EXPORTERS",
    "FORMATS",
    "OPSET_RANGES",
    "ExportConfig",
    "ExportResult",
    "ExportVerificationError",
    "default_out_dir",
    "export_model",
    "operator_name",
]
