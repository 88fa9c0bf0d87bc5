"""Real inputs for verifying a model: its recorded data split, a named source, or bundled photos.

Checkpoints (and the artifacts made from them) record `data_config` (a DataConfig as a dict),
so any later stage can rebuild the exact split the model was validated on.
"""

from __future__ import annotations

import dataclasses
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
    if not raw:
        return None
    return DataConfig(**{k: v for k, v in raw.items() if k in DataConfig.__dataclass_fields__})


def recorded_split(model: LoadedModel) -> dict[str, list[int]] | None:
    """The image indices of the train/val/test split the model was trained with, if recorded."""
    if model.artifact is not None:
        return model.artifact.manifest.source.get("split")
    return (model.info or {}).get("split")


def resolve_bundle(model: LoadedModel, data: str | None, spec: ModelSpec | None = None, *,
                   split_file: str | None = None, test_data: str | None = None) -> DataBundle | None:
    """DataBundle for `data` (or the model's recorded source), preprocessed with `spec` (default: the model's).

    On the recorded source the recorded split is reused (the images the model trained on stay out of val and
    test), with a --test-data holdout as its test part; --split-file replaces it with the user's own split.
    The data's classes are matched to the model's class names when both have names.
    """
    recorded = data_config_of(model)
    if data is None and recorded is None:
        if test_data is None:
            return None
        # only a holdout folder: it is the data, and every image of it is the test split
        bundle = load_data(spec or model.spec, DataConfig(source=str(test_data), val_fraction=0.0, test_fraction=0.0))
        bundle = dataclasses.replace(bundle, split={"train": [], "val": [], "test": bundle.indices("all")},
                                     extra={"split_origin": "holdout folder"})
        return _fitted(bundle, model.spec)
    same = recorded is not None and (data is None or recorded.source == data)
    base = recorded if same else DataConfig(source=str(data))
    overrides = {k: str(v) for k, v in (("split_file", split_file), ("test_data", test_data)) if v is not None}
    config = dataclasses.replace(base, **overrides) if overrides else base  # type: ignore[arg-type]
    split = recorded_split(model) if same and split_file is None else None
    if split is not None and test_data is not None and recorded.test_data != str(test_data):  # type: ignore[union-attr]
        split = {k: v for k, v in split.items() if k != "test"}  # the holdout becomes the test part
    bundle = load_data(spec or model.spec, config, split=split)
    origin = ("recorded" if split is not None else "split file" if config.split_file else
              "holdout folder" if config.test_data else "seeded")
    bundle.extra["split_origin"] = origin
    return _fitted(bundle, model.spec)


def _fitted(bundle: DataBundle, spec: ModelSpec) -> DataBundle:
    bundle = align_classes(bundle, spec)
    check_model_fits_data(spec, bundle)
    return bundle


def align_classes(bundle: DataBundle, spec: ModelSpec) -> DataBundle:
    """Relabel data whose class folders are a subset or reordering of the model's class names (a holdout folder
    with some classes missing still scores 'cat' as the model's 'cat'); anything else is left as it is."""
    names, model_names = list(bundle.class_names), list(spec.class_names)
    if not model_names or names == model_names or not set(names) <= set(model_names):
        return bundle
    mapping = np.asarray([model_names.index(n) for n in names], dtype=np.int64)
    samples = dataclasses.replace(bundle.samples, labels=mapping[bundle.samples.labels],
                                  class_names=tuple(model_names))
    return dataclasses.replace(bundle, samples=samples)


def evaluation_inputs(
    model: LoadedModel,
    data: str | None = None,
    part: str = "val",
    limit: int | None = None,
    photos: int = 200,
    spec: ModelSpec | None = None,
    split_file: str | None = None,
    test_data: str | None = None,
) -> EvalInputs:
    """Real images for `model`: a data split when one is known, else crops of the bundled photos."""
    bundle = resolve_bundle(model, data, spec, split_file=split_file, test_data=test_data)
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
