"""`vtool explain`: ExplainConfig -> explain(model, images) -> ExplainResult (heatmaps + PNG overlays)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserInputError, check_choice
from toolchain.explain.methods import GRAD_METHODS, METHODS, find_target_layer, grad_cam, occlusion
from toolchain.models import LoadedModel
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class ExplainConfig:
    """Which method, for which class, and where the overlays go.

    method: auto (Grad-CAM for torch models, occlusion for exported ones), gradcam, gradcam++ or occlusion.
    target_class: a class index or name; None explains each image's top-1 prediction.
    """

    method: str = "auto"
    target_class: str | int | None = None
    top_k: int = 3
    target_layer: str | None = None
    window: int | None = None  # occlusion window in input pixels (default: a quarter of the short side)
    stride: int | None = None
    runner: str = "auto"
    device: str = "cpu"
    threads: int | None = None
    batch_size: int = 64
    out: Path | None = Path("explain")  # None: compute only, write no PNG

    def __post_init__(self) -> None:
        check_choice("explanation method", self.method, ("auto", *METHODS))
        if self.top_k < 1:
            raise UserInputError(f"--top-k must be >= 1, got {self.top_k}.")
        for name in ("window", "stride"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserInputError(f"--{name} must be >= 1 pixel, got {value}.")
        if self.batch_size < 1:
            raise UserInputError(f"--batch-size must be >= 1, got {self.batch_size}.")
        if self.out is not None:
            self.out = Path(self.out)
            if self.out.exists() and not self.out.is_dir():
                raise UserInputError(f"--out '{self.out}' is a file; pass a directory for the overlays.")

    def resolve_method(self, model: LoadedModel) -> str:
        if self.method == "auto":
            return "gradcam" if model.is_torch else "occlusion"
        if self.method in GRAD_METHODS and not model.is_torch:
            raise UserInputError(f"{self.method} needs gradients, so it runs on eager torch models only; {model.name} "
                                 "is an exported artifact: use --method occlusion (forward-only, any backend).")
        return self.method


@dataclass
class Explanation:
    """One image: its top-k answer, the class explained, the heatmap (input resolution, [0, 1]) and overlay."""

    image: str
    method: str
    target: int
    target_label: str
    top: list[dict[str, Any]]
    heatmap: np.ndarray = field(repr=False)
    overlay: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "method": self.method, "target": self.target, "target_label": self.target_label,
                "top": self.top, "overlay": self.overlay}


@dataclass
class ExplainResult:
    model: str
    method: str
    layer: str | None
    items: list[Explanation]

    def __bool__(self) -> bool:
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "method": self.method, "target_layer": self.layer,
                "images": [item.to_dict() for item in self.items]}


def resolve_target(target: str | int | None, spec: ModelSpec) -> int | None:
    """A class index from an index or a class name (case-insensitive); None stays None (explain the top-1)."""
    if target is None:
        return None
    labels = spec.labels
    text = str(target).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < spec.num_classes:
            raise UserInputError(f"--target-class {index} is out of range: the model has {spec.num_classes} classes "
                                 f"(0..{spec.num_classes - 1}).")
        return index
    lowered = [label.lower() for label in labels]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    from toolchain.errors import did_you_mean

    raise UserInputError(f"--target-class '{text}' is not a class of this model (e.g. {', '.join(labels[:4])})."
                         f"{did_you_mean(text, list(labels))}")


def heatmaps(model: LoadedModel, x: np.ndarray, targets: list[int], method: str, config: ExplainConfig,
             runner: Any = None) -> tuple[np.ndarray, str | None]:
    """Maps (N, H, W) for preprocessed inputs; `runner` (an open Runner) is reused for occlusion when given."""
    if method in GRAD_METHODS:
        layer = find_target_layer(model.module, (1, *x.shape[1:]), config.target_layer)
        log.info("%s reads layer %s (%s)", method, layer.name, layer.why)
        maps = grad_cam(model.module, x, targets, method, layer)
        return maps, layer.name
    if runner is not None:
        return occlusion(runner, x, targets, config.window, config.stride, config.batch_size), None
    from toolchain.runners import get_runner

    with get_runner(config.runner, model, device=config.device, threads=config.threads) as opened:
        return occlusion(opened, x, targets, config.window, config.stride, config.batch_size), None


def explain(model: LoadedModel | str, images: list[str | Path], config: ExplainConfig | None = None) -> ExplainResult:
    """Top-k and a heatmap for each image file; overlays (image | heatmap, titled with the top-k) under config.out."""
    from toolchain.predict import softmax
    from toolchain.preprocess import open_image, preprocess
    from toolchain.runners import get_runner
    from toolchain.sources import as_loaded

    config = config or ExplainConfig()
    model = as_loaded(model)
    method = config.resolve_method(model)
    fixed = resolve_target(config.target_class, model.spec)
    paths = [Path(p) for p in images]
    if not paths:
        raise UserInputError("No images given: pass --image FILE (repeatable).")
    x = preprocess([open_image(path) for path in paths], model.spec)  # every file decodes before any work
    labels = model.spec.labels
    k = min(config.top_k, model.spec.num_classes)
    with get_runner(config.runner, model, device=config.device, threads=config.threads) as runner:
        probs = softmax(runner.infer_batched(x, config.batch_size))
        targets = [int(np.argmax(row)) if fixed is None else fixed for row in probs]
        maps, layer = heatmaps(model, x, targets, method, config, runner)
    items = []
    for i, path in enumerate(paths):
        order = np.argsort(-probs[i])[:k]
        top = [{"label": labels[j], "index": int(j), "confidence": float(probs[i, j])} for j in order]
        items.append(Explanation(str(path), method, targets[i], labels[targets[i]], top, maps[i]))
    if config.out is not None:
        from toolchain.explain.figures import overlay_figure, to_display

        stems = [Path(item.image).stem for item in items]
        for i, item in enumerate(items):
            stem = stems[i] if stems.count(stems[i]) == 1 else f"{stems[i]}-{i}"  # a/3.png and b/3.png
            dest = config.out / f"{stem}-{method.replace('+', 'p')}.png"
            item.overlay = str(overlay_figure(to_display(x[i], model.spec), item, dest))
    return ExplainResult(model.name, method, layer, items)
