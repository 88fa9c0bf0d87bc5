"""Real inputs for verifying a model: its recorded data split, a named source, or bundled photos.

Checkpoints (and the artifacts made from them) record `data_config` (a DataConfig as a dict),
so any later stage can rebuild the exact split the model was validated on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolchain.data import DataBundle, DataConfig, check_model_fits_data, load_data, photo_crops
from toolchain.errors import UserInputError
from toolchain.models import LoadedModel
from toolchain.spec import ModelSpec


@dataclass
class EvalInputs:
    """Preprocessed float32 NCHW images, labels when known, and where they came from."""

    x: np.ndarray
    labels: np.ndarray | None
    description: dict[str, Any] = field(default_factory=dict)
    bundle: DataBundle | None = None


def data_config_of(model: LoadedModel) -> DataConfig | None:
    """The DataConfig a checkpoint or artifact was trained/validated with, if recorded."""
    raw = None
    if model.artifact is not None:
        raw = model.artifact.manifest.source.get("data_config")
    elif model.info:
        raw = model.info.get("data_config")
    return DataConfig(**raw) if raw else None


def resolve_bundle(model: LoadedModel, data: str | None, spec: ModelSpec | None = None) -> DataBundle | None:
    """DataBundle for `data` (or the model's recorded source), preprocessed with `spec` (default: the model's)."""
    recorded = data_config_of(model)
    if data is None and recorded is None:
        return None
    if data is None or (recorded is not None and recorded.source == data):
        config = recorded
    else:
        config = DataConfig(source=data)
    bundle = load_data(spec or model.spec, config)
    check_model_fits_data(model.spec, bundle)
    return bundle


def evaluation_inputs(
    model: LoadedModel,
    data: str | None = None,
    part: str = "val",
    limit: int | None = None,
    photos: int = 200,
    spec: ModelSpec | None = None,
) -> EvalInputs:
    """Real images for `model`: a data split when one is known, else crops of the bundled photos."""
    bundle = resolve_bundle(model, data, spec)
    if bundle is not None:
        x, labels = bundle.arrays(part, limit=limit)
        return EvalInputs(x, labels, {**bundle.describe(), "part": part, "n": int(len(x))}, bundle)
    use_spec = spec or model.spec
    if use_spec.num_classes == 1000:
        x = photo_crops(use_spec, photos)
        return EvalInputs(x, None, {"source": "bundled-photos (scikit-image)", "crops": photos, "n": photos})
    raise UserInputError(
        f"No data is known for {model.name}: pass --data (digits, synthetic or an ImageFolder directory) "
        "so it can be checked on real images."
    )
