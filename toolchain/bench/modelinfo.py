"""Static facts about a model for bench results: format, precision, parameters, MACs, size on disk."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from toolchain.models import LoadedModel

log = logging.getLogger(__name__)

TORCH_PRECISIONS = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16", "torch.int8": "int8"}


def torch_precision(module: Any) -> str:
    for param in module.parameters():
        return TORCH_PRECISIONS.get(str(param.dtype), str(param.dtype))
    return "fp32"


def count_macs(module: Any, input_shape: tuple[int, ...]) -> int | None:
    """Multiply-accumulates of one forward pass at batch 1 (conv/matmul/attention, via FlopCounterMode)."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        device = next(iter(module.parameters())).device if any(True for _ in module.parameters()) else "cpu"
        x = torch.zeros(input_shape, device=device)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            module.eval()(x)
        return int(counter.get_total_flops() // 2)
    except Exception as exc:  # noqa: BLE001 - counting is best effort; a model that can't be traced is 'n/a'
        log.debug("MAC counting failed: %s", exc)
        return None


def onnx_files(model_path: Path) -> tuple[int | None, list[Path]]:
    """Initializer element count and the external-data files an ONNX model stores weights in."""
    try:
        import onnx
        from onnx.external_data_helper import ExternalDataInfo, uses_external_data
    except ImportError:
        return None, []
    try:
        proto = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - a broken file fails later in the runner with a clear message
        log.debug("could not read %s: %s", model_path, exc)
        return None, []
    params, files = 0, set()
    for init in proto.graph.initializer:
        count = 1
        for dim in init.dims:
            count *= dim
        if init.data_type != onnx.TensorProto.INT64:  # int64 initializers are shapes/indices, not weights
            params += count
        if uses_external_data(init):
            files.add(model_path.parent / ExternalDataInfo(init).location)
    return params, sorted(files)


def model_stats(model: LoadedModel) -> dict[str, Any]:
    """format, precision, params, macs, model_size_mb and notes on how each was obtained."""
    notes: list[str] = []
    shape = model.spec.input_shape(1)
    if model.is_torch:
        module = model.module
        params = sum(p.numel() for p in module.parameters())
        size = sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))
        return {"format": "torch", "precision": torch_precision(module), "params": int(params),
                "macs": count_macs(module, shape), "model_size_mb": round(size / 1e6, 3),
                "stats_notes": ["model_size_mb: in-memory weights and buffers of the eager module"]}
    artifact = model.artifact
    assert artifact is not None
    files = [artifact.model_path]
    params: int | None = None
    if artifact.format == "onnx":
        params, external = onnx_files(artifact.model_path)
        files += external
        if params is not None:
            notes.append("params: ONNX initializer elements (int64 shape constants excluded)")
    size = sum(f.stat().st_size for f in files if f.is_file())
    macs = None
    build = model.spec.build if isinstance(model.spec.build, dict) else {}
    try:  # MACs (and params for pt2/TorchScript) from the fp32 architecture this artifact was built from
        from toolchain.models.checkpoint import rebuild_module

        if build.get("kind") not in ("registry", "hf"):  # a user class named in a manifest is never imported
            raise LookupError(f"no rebuildable architecture recorded (build kind {build.get('kind')!r})")
        reference = rebuild_module(model.spec)
        macs = count_macs(reference, shape)
        if params is None:
            params = sum(p.numel() for p in reference.parameters())
            notes.append("params: counted on the rebuilt source architecture")
        if macs is not None:
            notes.append("macs: counted on the rebuilt fp32 source architecture")
    except Exception as exc:  # noqa: BLE001 - no recorded architecture: MACs are simply unknown
        log.debug("cannot rebuild %s for MAC counting: %s", model.name, exc)
    return {"format": artifact.format, "precision": artifact.manifest.precision, "params": params, "macs": macs,
            "model_size_mb": round(size / 1e6, 3), "stats_notes": notes}
