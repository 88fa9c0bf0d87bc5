"""ModelOptions: what a user says about a model's inputs and outputs, from flags and a config file, and the one
resolver that turns it into (or onto) a ModelSpec.

A config file (`--config model.json`) is a JSON object in any of three dialects, so an existing file works:

- vtool's own keys: `input_size` (N, [H, W] or [C, H, W]), `mean`, `std`, `interpolation`, `crop_pct`,
  `num_classes`, `labels` (a list of class names, or the path of a labels file next to the config);
- timm's `pretrained_cfg` (top level or nested under "pretrained_cfg"; `label_names` for the classes);
- Hugging Face `preprocessor_config.json` (`image_mean`, `image_std`, `size`, `crop_size`, `resample`,
  `crop_pct`) and `config.json` (`id2label`, `num_labels`).

Precedence: explicit flags > the config file > what the data says (class names of an ImageFolder) > what the
model says (its checkpoint or manifest, a registry entry's defaults, a user class's own constructor defaults).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from toolchain.errors import UserInputError, check_choice
from toolchain.spec import INTERPOLATIONS, ModelSpec

log = logging.getLogger(__name__)

# PIL resample codes as Hugging Face processors store them
HF_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
VTOOL_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "num_classes", "labels", "class_names",
              "channels")
FOREIGN_KEYS = ("label_names", "pretrained_cfg", "image_mean", "image_std", "size", "crop_size", "resample",
                "id2label", "label2id", "num_labels")


@dataclass(frozen=True)
class ModelOptions:
    """The shared model flags (and --config), validated; None means 'not said' (the model or data decides)."""

    weights: str | None = None
    num_classes: int | None = None
    input_size: tuple[int, int] | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str | None = None
    crop_pct: float | None = None
    class_names: tuple[str, ...] | None = None
    pretrained: bool | None = None
    config: str | None = None  # the --config file these came from (recorded for provenance)

    def __post_init__(self) -> None:
        if self.num_classes is not None and (not isinstance(self.num_classes, int) or self.num_classes < 1):
            raise UserInputError(f"--num-classes must be a whole number >= 1, got {self.num_classes}.")
        if self.input_size is not None:
            size = tuple(int(v) for v in self.input_size)
            if len(size) != 2 or min(size) < 1:
                raise UserInputError(f"--input-size must be N or HxW with positive numbers, got {self.input_size}.")
            object.__setattr__(self, "input_size", size)
        if self.channels is not None and self.channels not in (1, 3):
            raise UserInputError(f"channels must be 1 or 3, got {self.channels}.")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is None:
                continue
            values = tuple(float(v) for v in values)
            if len(values) not in (1, self.channels or 3) or not all(math.isfinite(v) for v in values):
                raise UserInputError(
                    f"--{name} needs {self.channels or 3} finite values (one per channel, RGB order) or 1 for all, "
                    f"got {len(values)}: {','.join(f'{v:g}' for v in values)}; e.g. --{name} "
                    f"{'0.485,0.456,0.406' if name == 'mean' else '0.229,0.224,0.225'}."
                )
            if name == "std" and min(values) <= 0:
                raise UserInputError(f"--std values must be > 0, got {','.join(f'{v:g}' for v in values)}.")
            object.__setattr__(self, name, values)
        if self.interpolation is not None:
            check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        if self.crop_pct is not None and not 0.0 < float(self.crop_pct) <= 1.0:
            raise UserInputError(f"--crop-pct must be in (0, 1] (0.875 = resize to size/0.875, then center-crop), "
                                 f"got {self.crop_pct}.")
        if self.class_names is not None:
            names = tuple(str(n) for n in self.class_names)
            if not names:
                raise UserInputError("--labels gave no class names; put one name per line, in class-index order.")
            duplicate = next((n for i, n in enumerate(names) if n in names[:i]), None)
            if duplicate is not None:
                raise UserInputError(f"--labels names class '{duplicate}' twice; every class needs its own name.")
            if self.num_classes is not None and len(names) != self.num_classes:
                raise UserInputError(f"--labels has {len(names)} class names but --num-classes is {self.num_classes};"
                                     " give one name per class, in class-index order.")
            object.__setattr__(self, "class_names", names)

    @classmethod
    def from_flags(cls, *, config: str | Path | None = None, labels: str | Path | None = None,
                   mean: str | None = None, std: str | None = None, input_size: str | None = None,
                   **flags: Any) -> ModelOptions:
        """The CLI's strings (and --config, --labels files) -> ModelOptions; flags override the config file."""
        values: dict[str, Any] = read_config(config) if config is not None else {}
        if config is not None:
            values["config"] = str(config)
        if labels is not None:
            values["class_names"] = read_labels(labels)
        if mean is not None:
            values["mean"] = parse_floats(mean, "--mean")
        if std is not None:
            values["std"] = parse_floats(std, "--std")
        if input_size is not None:
            values["input_size"] = parse_size(input_size)
        values.update({k: v for k, v in flags.items() if v is not None})
        return cls(**values)

    def merged(self, **overrides: Any) -> ModelOptions:
        """A copy with the given non-None values set (library keyword arguments over the options object)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **given) if given else self

    @property
    def is_empty(self) -> bool:
        return not any(v is not None for v in asdict(self).values())

    def to_dict(self) -> dict[str, Any]:
        """What was said (None values left out): recorded in checkpoints and manifests."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}

    def preprocessing(self, channels: int) -> dict[str, Any]:
        """The ModelSpec fields these options set for a model with `channels` inputs (mean/std of one value
        broadcast to every channel)."""
        changes: dict[str, Any] = {}
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None:
                if len(values) not in (1, channels):
                    raise UserInputError(f"--{name} has {len(values)} values but the model reads {channels}-channel "
                                         "images; give one per channel (or 1).")
                changes[name] = values * channels if len(values) == 1 else values
        if self.interpolation is not None:
            changes["interpolation"] = self.interpolation
        if self.crop_pct is not None:
            changes["crop_pct"] = float(self.crop_pct)
        return changes


def apply_options(spec: ModelSpec, options: ModelOptions, name: str, recorded: bool,
                  data_names: tuple[str, ...] | None = None) -> ModelSpec:
    """`spec` with the options' preprocessing and class names on it.

    recorded: the spec comes with the model (checkpoint, artifact, Hugging Face config), so a different
    class count or input size is a conflict, not a request. Class names come from the options, else from
    the data when the model has none and the counts match.
    """
    if recorded:
        if options.num_classes is not None and options.num_classes != spec.num_classes:
            raise UserInputError(f"--num-classes {options.num_classes} conflicts with {name}, which predicts "
                                 f"{spec.num_classes} classes; leave --num-classes out (the model records it).")
        if options.input_size is not None and tuple(options.input_size) != tuple(spec.input_size):
            size = "x".join(map(str, spec.input_size))
            raise UserInputError(f"--input-size {'x'.join(map(str, options.input_size))} conflicts with {name}, "
                                 f"built for {size}; leave --input-size out (the model records it).")
    changes = options.preprocessing(spec.channels)
    if options.class_names is not None:
        if len(options.class_names) != spec.num_classes:
            source = f"--labels/--config ({len(options.class_names)} names)"
            raise UserInputError(f"{source} does not fit {name}, which predicts {spec.num_classes} classes; give one "
                                 "name per class, in class-index order.")
        changes["class_names"] = options.class_names
    elif not spec.class_names and data_names and len(data_names) == spec.num_classes:
        log.info("class names of %s taken from the data: %s", name, ", ".join(data_names[:6]) +
                 (", ..." if len(data_names) > 6 else ""))
        changes["class_names"] = tuple(data_names)
    if recorded:
        for key, value in changes.items():
            before = getattr(spec, key)
            if before != value and key != "class_names" and before is not None:
                log.info("%s: %s %s overrides the recorded %s", name, key, value, before)
    return spec.replace(**changes) if changes else spec


# ------------------------------------------------------------------ parsing flags and files


def parse_floats(value: str, flag: str) -> tuple[float, ...]:
    """'0.485,0.456,0.406' (or one number) -> a tuple of floats."""
    try:
        return tuple(float(v) for v in value.replace(" ", ",").split(",") if v)
    except ValueError:
        raise UserInputError(f"{flag} '{value}' must be comma-separated numbers, e.g. 0.485,0.456,0.406.") from None


def parse_size(value: str | int | list[int] | tuple[int, ...]) -> tuple[int, int]:
    """'224', '224x224', 224 or [224, 224] -> (224, 224)."""
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)):
        nums = [int(v) for v in value]
    else:
        try:
            nums = [int(p) for p in str(value).lower().replace(",", "x").split("x")]
        except ValueError:
            raise UserInputError(f"--input-size '{value}' is not a size; expected N or HxW, e.g. 32 or 224x224."
                                 ) from None
    if len(nums) == 1:
        nums *= 2
    if len(nums) != 2 or min(nums) < 1:
        raise UserInputError(f"--input-size '{value}' must be N or HxW with positive numbers.")
    return nums[0], nums[1]


def read_labels(path: str | Path) -> tuple[str, ...]:
    """A labels file: one class name per line in class-index order (blank lines skipped), or a JSON list."""
    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"Labels file '{file}' does not exist; expected one class name per line.")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"Cannot read labels file '{file}' ({exc}); expected UTF-8 text.") from None
    if file.suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserInputError(f"Labels file '{file}' is not valid JSON ({exc}).") from None
        return _names(names, str(file))
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _names(value: Any, where: str) -> tuple[str, ...]:
    """A list of names, or an {index: name} mapping (Hugging Face id2label), in index order."""
    if isinstance(value, dict):
        try:
            ordered = sorted(((int(k), str(v)) for k, v in value.items()), key=lambda kv: kv[0])
        except ValueError:
            raise UserInputError(f"{where}: class names keyed by index must use whole-number keys.") from None
        if [i for i, _ in ordered] != list(range(len(ordered))):
            raise UserInputError(f"{where}: class indices must run 0..{len(ordered) - 1} without gaps.")
        return tuple(v for _, v in ordered)
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return tuple(str(v) for v in value)
    raise UserInputError(f"{where}: class names must be a list of strings (or an index -> name mapping).")


def read_config(path: str | Path) -> dict[str, Any]:
    """A --config file (vtool, timm pretrained_cfg or Hugging Face dialect) -> ModelOptions keyword arguments."""
    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"Config file '{file}' does not exist; expected a JSON file (see README: config file).")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"Config file '{file}' is not valid JSON ({exc}).") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"Config file '{file}' must hold a JSON object of settings.")
    nested = raw.get("pretrained_cfg")
    data = {**raw, **nested} if isinstance(nested, dict) else dict(raw)
    _check_keys(data, file)
    out: dict[str, Any] = {}
    _hf_keys(data, out, file)
    if "label_names" in data:
        out["class_names"] = _names(data["label_names"], str(file))
    if "input_size" in data:
        size = data["input_size"]
        if isinstance(size, list) and len(size) == 3:  # timm: [C, H, W]
            out["channels"], size = int(size[0]), size[1:]
        out["input_size"] = parse_size(size)
    for key in ("mean", "std", "interpolation", "crop_pct", "num_classes", "channels"):
        if key in data:
            out[key] = data[key]
    labels = data.get("labels", data.get("class_names"))
    if isinstance(labels, str):
        labels_file = Path(labels) if Path(labels).is_absolute() else file.parent / labels
        out["class_names"] = read_labels(labels_file)
    elif labels is not None:
        out["class_names"] = _names(labels, str(file))
    for key in ("mean", "std"):
        if key in out and not isinstance(out[key], (list, tuple)):
            out[key] = [out[key]]
    if "num_classes" in out and not isinstance(out["num_classes"], int):
        raise UserInputError(f"{file}: num_classes must be a whole number, got {out['num_classes']!r}.")
    return out


def _check_keys(data: dict[str, Any], file: Path) -> None:
    """A near-miss of a known key is a typo (error); other keys belong to other tools (ignored, said once)."""
    import difflib

    known = VTOOL_KEYS + FOREIGN_KEYS
    unknown = [k for k in data if k not in known and not k.startswith(("do_", "_"))]
    for key in unknown:
        match = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        if match:
            raise UserInputError(f"Config file '{file}' has an unknown key '{key}'. Did you mean '{match[0]}'?")
    if unknown:
        log.info("%s: ignoring keys vtool does not use: %s", file, ", ".join(unknown[:8]))


def _hf_keys(data: dict[str, Any], out: dict[str, Any], file: Path) -> None:
    """Hugging Face preprocessor_config.json / config.json keys (vtool's own keys, read after, win)."""
    if "image_mean" in data:
        out["mean"] = data["image_mean"]
    if "image_std" in data:
        out["std"] = data["image_std"]
    if "resample" in data:
        if data["resample"] not in HF_RESAMPLE:
            raise UserInputError(f"{file}: resample {data['resample']!r} is not supported; vtool resizes with "
                                 "nearest (0), bilinear (2) or bicubic (3).")
        out["interpolation"] = HF_RESAMPLE[data["resample"]]
    size, crop = data.get("size"), data.get("crop_size")
    shortest = size.get("shortest_edge") if isinstance(size, dict) else None
    if isinstance(crop, dict) and {"height", "width"} <= set(crop):
        out["input_size"] = (int(crop["height"]), int(crop["width"]))
        if shortest:
            out["crop_pct"] = min(1.0, int(crop["height"]) / int(shortest))
    elif isinstance(size, dict) and {"height", "width"} <= set(size):
        out["input_size"] = (int(size["height"]), int(size["width"]))
    elif shortest:
        out["input_size"] = (int(shortest), int(shortest))
    elif isinstance(size, int):
        out["input_size"] = (size, size)
    if "id2label" in data:
        out["class_names"] = _names(data["id2label"], str(file))
    elif "num_labels" in data:
        out["num_classes"] = int(data["num_labels"])


def data_class_names(data: str | None) -> tuple[str, ...] | None:
    """Class names a data source declares without reading any image: an ImageFolder's sub-folder names (in the
    order vtool labels them), digits' 0-9; None when unknown."""
    if not data:
        return None
    if data == "digits":
        return tuple(str(i) for i in range(10))
    folder = Path(data)
    if not folder.is_dir():
        return None
    names = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")))
    return names if len(names) >= 2 else None
