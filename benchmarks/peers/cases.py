"""The models the peers suite quantizes, each as an fp32 ONNX artifact with one shared data set.

Every quantizer gets the same calibration batches and is judged on the same images: the ones vtool's
own stage resolves (`resolve_quant_data` with QuantConfig's defaults), so vtool's internal budget and
this table look at identical pixels. ImageNet models calibrate on crops of the 'calibration' photo
group and are judged on crops of the 'evaluation' group (different source photos); the digits ViT
calibrates on its train split and is judged on its labelled validation split.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MODELS = ("efficientnet-lite0", "resnet18", "vit-tiny-digits")
DEFAULT_MODELS = ("efficientnet-lite0",)  # the acceptance model; the others on request (--models)
VIT_ONNX = Path(os.environ.get("VTOOL_PEERS_VIT_ONNX", "/work/scratch/vit/fp32-onnx"))


@dataclass
class Case:
    """One fp32 model and the data every tool shares."""

    name: str
    artifact: Path  # fp32 ONNX artifact directory (model.onnx + manifest.json)
    loaded: Any  # toolchain LoadedModel of that artifact
    calibration: list[np.ndarray]  # the calibration batches, materialised once
    eval_x: np.ndarray
    eval_labels: np.ndarray | None
    description: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def fp32(self) -> Path:
        """The fp32 ONNX file every tool starts from."""
        return self.artifact / "model.onnx"

    @property
    def spec(self) -> Any:
        """The model's ModelSpec (input size, mean/std)."""
        return self.loaded.spec

    def calibration_sha256(self) -> str:
        """Hashed like vtool's HashingBatches (float32 bytes, batch by batch) to prove the sets match."""
        digest = hashlib.sha256()
        for batch in self.calibration:
            digest.update(np.ascontiguousarray(batch, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def calibration_images(self) -> int:
        """How many calibration images the batches hold."""
        return int(sum(len(b) for b in self.calibration))


def _export(model_name: str, out: Path, note: Callable[[str], None]) -> Path:
    """Export a registry model to an fp32 ONNX artifact once; later runs reuse it."""
    if (out / "manifest.json").exists():
        note(f"fp32 ONNX reused from {out}")
        return out
    import torch

    from toolchain.export import ExportConfig, export_model
    from toolchain.sources import load_model

    torch.manual_seed(0)  # resnet18's random initialisation is reproducible
    export_model(load_model(model_name), ExportConfig(format="onnx", out=out))
    return out


def _pretrained_note(model_name: str) -> str:
    """Try the pretrained weights once and say plainly what happened (offline: a clear failure)."""
    from toolchain.errors import VtoolError
    from toolchain.sources import load_model

    try:
        load_model(model_name, pretrained=True)
    except VtoolError as exc:
        return (f"{model_name} has RANDOM weights: pretrained weights are not available here "
                f"({str(exc).splitlines()[0][:240]}); agreement on a random network says little about accuracy")
    return f"{model_name}: pretrained weights loaded"


def _vit_artifact(cache: Path, note: Callable[[str], None]) -> Path:
    """The trained digits ViT's fp32 ONNX artifact, copied into the cache (never retrained here)."""
    out = cache / "vit-tiny-digits-fp32"
    if not (out / "manifest.json").exists():
        if not (VIT_ONNX / "manifest.json").exists():
            from toolchain.errors import UserInputError

            raise UserInputError(f"the trained digits ViT's fp32 ONNX artifact is missing at {VIT_ONNX}; set "
                                 "VTOOL_PEERS_VIT_ONNX to an artifact of a vit-tiny trained on digits.")
        shutil.copytree(VIT_ONNX, out, dirs_exist_ok=True)
    note(f"trained vit-tiny (digits) fp32 ONNX from {VIT_ONNX}")
    return out


def fp32_artifact(name: str, cache: Path, notes: list[str]) -> Path:
    """The fp32 ONNX artifact of `name` in `cache` (exported or copied once, then reused)."""
    cache.mkdir(parents=True, exist_ok=True)
    if name == "vit-tiny-digits":
        return _vit_artifact(cache, notes.append)
    path = _export(name, cache / f"{name}-fp32", notes.append)
    if name == "resnet18":
        notes.append(_pretrained_note(name))
    return path


def build_case(name: str, cache: Path) -> Case:
    """Export or copy the fp32 model, then resolve the data exactly as vtool's quantize stage does."""
    from toolchain.quantize import QuantConfig
    from toolchain.quantize.calib import resolve_quant_data
    from toolchain.sources import load_model

    if name not in MODELS:
        raise ValueError(f"unknown peers model '{name}'; expected one of {', '.join(MODELS)}")
    notes: list[str] = []
    artifact = fp32_artifact(name, cache, notes)
    loaded = load_model(str(artifact))
    defaults = QuantConfig()
    qdata = resolve_quant_data(loaded, None, defaults.samples, defaults.batch_size, defaults.eval_samples,
                               defaults.seed)
    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in qdata.calibration()]
    eval_x = np.ascontiguousarray(qdata.eval_x, dtype=np.float32)
    log.info("%s: %d calibration images in %d batches, %d judging images%s", name, sum(map(len, batches)),
             len(batches), len(eval_x), " (labelled)" if qdata.eval_labels is not None else "")
    return Case(name, artifact, loaded, batches, eval_x, qdata.eval_labels, qdata.description, notes)
