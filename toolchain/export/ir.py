"""OpenVINO IR (`model.xml` + `model.bin`) via openvino.convert_model (torch) or Core.read_model (ONNX) + save_model.

From an eager PyTorch model the IR is fp32 (OpenVINO's PyTorch frontend on a torch.export program);
from an ONNX file (e.g. an INT8 QDQ artifact of `vtool quantize`) the IR keeps the quantization as
FakeQuantize ops, which OpenVINO's CPU plugin runs in INT8. save_model would compress fp32 weights to
fp16 by default; vtool keeps them fp32 so the IR answers like its source.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from toolchain.export.formats import INPUT_NAME, OUTPUT_NAME
from toolchain.export.pte import require
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)


def _input_shape(spec: ModelSpec, dynamic: bool) -> Any:
    import openvino as ov

    return ov.PartialShape([-1 if dynamic else 1, spec.channels, *spec.input_size])


def _save(model: Any, path: Path) -> dict[str, Any]:
    import openvino as ov

    model.inputs[0].get_tensor().set_names({INPUT_NAME})
    model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    ov.save_model(model, str(path), compress_to_fp16=False)
    ops = [op.get_type_name() for op in model.get_ordered_ops()]
    fake_quantize = sum(1 for op in ops if op == "FakeQuantize")
    return {"runtime": "openvino", "openvino": ov.get_version().split("-")[0], "ir_ops": len(ops),
            "fake_quantize_ops": fake_quantize, "compress_to_fp16": False,
            "input_shape": str(model.inputs[0].get_partial_shape()), "weights_file": path.with_suffix(".bin").name}


def write_openvino(module: Any, example: Any, path: Path, spec: ModelSpec, config: Any) -> dict[str, Any]:
    """fp32 IR of an eager module (converted from its torch.export program)."""
    import torch

    require("openvino", "--format openvino")
    import openvino as ov

    shapes = ({0: torch.export.Dim("batch", min=1)},) if config.dynamic_batch else None
    program = torch.export.export(module, (example,), dynamic_shapes=shapes)
    model = ov.convert_model(program, input=[_input_shape(spec, config.dynamic_batch)])
    return {"exporter": "openvino.convert_model (torch.export program)", **_save(model, path),
            "batch": {"dynamic": bool(config.dynamic_batch)}}


def write_openvino_from_onnx(onnx_path: Path, path: Path, spec: ModelSpec, config: Any) -> dict[str, Any]:
    """IR of an ONNX file as it is (fp32, or INT8 QDQ -> FakeQuantize); a static batch fixes the batch at 1."""
    require("openvino", "--format openvino")
    import openvino as ov

    from toolchain.runners.openvino_rt import refuse_contrib_ops

    refuse_contrib_ops(onnx_path)
    # Core.read_model, not convert_model: on an INT8 QDQ graph convert_model's transformations moved
    # EfficientNet-Lite0's logits by up to 0.25 (0.18 on 64 crops) against the same ONNX read by OpenVINO;
    # read_model + save_model writes the graph OpenVINO runs for that ONNX, so the IR answers exactly like its
    # source (max diff 0.0).
    model = ov.Core().read_model(str(onnx_path))
    if not config.dynamic_batch:
        model.reshape({model.inputs[0]: _input_shape(spec, False)})
    details = _save(model, path)
    dynamic = not model.inputs[0].get_partial_shape()[0].is_static
    return {"exporter": "openvino.Core.read_model (ONNX)", "source_onnx": str(onnx_path), **details,
            "batch": {"dynamic": dynamic}}
