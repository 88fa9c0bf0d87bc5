"""evaluate(): accuracy, top-5, per-class precision/recall/F1, confusion matrix, misclassified images.

Works for any LoadedModel through a Runner, so a checkpoint and the artifacts exported from it
are scored the same way. The data defaults to what the model recorded (source, seed and split).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain import callable_module
from toolchain.data import PARTS, DataBundle
from toolchain.errors import UserInputError, check_choice, renamed_field
from toolchain.inputs import resolve_bundle
from toolchain.metrics import topk_accuracy
from toolchain.models import LoadedModel
from toolchain.report import write_result

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CONFUSION_PNG = "confusion_matrix.png"
MISCLASSIFIED_PNG = "misclassified.png"


@dataclass
class EvalConfig:
    """Which split to score ("all": every image), with which backend, how many misclassified images to draw; a
    --split-file or --test-data holdout replaces the split the model recorded."""

    split: str = "test"
    runner: str = "auto"
    device: str = "cpu"
    threads: int | None = None
    batch_size: int = 64
    max_misclassified: int = 24
    workers: int = 0  # DataLoader processes decoding images (0: this process)
    split_file: str | None = None
    test_data: str | None = None
    part: InitVar[str | None] = None  # deprecated name of `split`

    def __post_init__(self, part: str | None) -> None:
        renamed_field(self, "part", "split", part)
        check_choice("split", self.split, PARTS)
        if self.batch_size < 1:
            raise UserInputError(f"--batch-size must be >= 1, got {self.batch_size}.")
        if self.workers < 0:
            raise UserInputError(f"--workers must be >= 0, got {self.workers}.")
        if self.max_misclassified < 0:
            raise UserInputError(f"max_misclassified must be >= 0, got {self.max_misclassified}.")


@dataclass
class EvalResult:
    """Scores of one model on one split; `to_dict()` has the stable keys scripts read."""

    accuracy: float
    top5: float
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    n: int
    part: str
    class_names: list[str]
    macro_f1: float
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    runner: str = ""
    files: dict[str, str] = field(default_factory=dict)
    misclassified: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def eval_bundle(model: LoadedModel, data: str | None = None, config: EvalConfig | None = None) -> DataBundle:
    """The model's data, preprocessed for it: the recorded split on the recorded source, the user's split file,
    or a --test-data holdout (inputs.resolve_bundle)."""
    config = config or EvalConfig()
    bundle = resolve_bundle(model, data, split_file=config.split_file, test_data=config.test_data)
    if bundle is None:
        raise UserInputError(
            f"No data is recorded for {model.name}: pass --data (digits, synthetic or an ImageFolder directory "
            "with the model's classes), or --test-data HOLDOUT_DIR."
        )
    if bundle.extra.get("split_origin") == "seeded" and config.split != "all":
        part = len(bundle.indices(config.split))
        log.warning("scoring the %s part (%d of %d images) of vtool's own seeded split of %s; if %s was trained on "
                    "these images they are not held out: pass --split all for a holdout folder, or --split-file / "
                    "--test-data for your own split", config.split, part, len(bundle.samples), bundle.samples.source,
                    model.name)
    return bundle


def predict_logits(model: LoadedModel, bundle: DataBundle,
                   config: EvalConfig) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """Logits and labels of a whole split, streamed through the model's runner. Inside torchrun each rank runs
    its shard of the batches and rank 0 gets everything, in order ((None, None) on the other ranks)."""
    from toolchain.distributed import config as dist_env
    from toolchain.distributed.runtime import current
    from toolchain.distributed.shard import bundle_batches, infer_shards
    from toolchain.runners import get_runner

    indices = bundle.indices(config.split)
    if not indices:
        raise UserInputError(f"The '{config.split}' split of {bundle.samples.source} is empty; nothing to evaluate.")
    dist = current(config.device)
    threads = config.threads or (dist_env.rank_threads() if dist.distributed else None)
    with dist.guard(), get_runner(config.runner, model, device=config.device, threads=threads) as runner:
        batches, total = bundle_batches(bundle, indices, config.batch_size, dist, config.workers)
        gathered = infer_shards([runner], batches, total, dist, model.spec.num_classes)
    if gathered is None:
        return None, None
    return gathered[0][0], gathered[1]


def score(logits: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """accuracy, top5, per_class {name: precision/recall/f1/support}, confusion_matrix, macro_f1 (sklearn)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    names = list(class_names)
    classes = list(range(len(names)))
    preds = logits.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=classes, zero_division=0)
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
    }
    present = support > 0
    return {
        "accuracy": float(np.mean(preds == labels)),
        "top5": topk_accuracy(logits, labels, 5),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, preds, labels=classes).tolist(),
        "macro_f1": float(np.mean(f1[present])) if present.any() else 0.0,
    }


def evaluate(
    model: LoadedModel | str,
    data: DataBundle | str | None = None,
    config: EvalConfig | None = None,
    out_dir: str | Path | None = None,
) -> EvalResult:
    """Score `model` (a LoadedModel or a --model source) on a split of `data` (a DataBundle, a data source name,
    or None: the model's recorded data and split); with out_dir, write metrics.json and the two PNG plots."""
    from toolchain.sources import as_loaded

    config = config or EvalConfig()
    model = as_loaded(model)
    bundle = data if isinstance(data, DataBundle) else eval_bundle(model, data, config)
    if model.spec.num_classes != bundle.num_classes:
        raise UserInputError(f"{model.name} predicts {model.spec.num_classes} classes but the data has "
                             f"{bundle.num_classes}; evaluate it on data with its classes.")
    bundle = dataclasses.replace(bundle, spec=model.spec)
    from toolchain.distributed.runtime import current

    dist = current(config.device)
    logits, labels = predict_logits(model, bundle, config)
    if logits is None or labels is None:  # a torchrun worker other than rank 0: rank 0 scores and writes
        with dist.guard():
            return dist.broadcast(None)
    names = list(model.spec.class_names or bundle.class_names)
    scores = score(logits, labels, names)
    indices = bundle.indices(config.split)
    preds = logits.argmax(1)
    wrong = np.flatnonzero(preds != labels)
    misclassified = []
    for i in wrong[: config.max_misclassified]:
        item = bundle.samples.items[indices[i]]
        misclassified.append({"index": int(indices[i]), "true": names[labels[i]], "pred": names[preds[i]],
                              "file": str(item) if isinstance(item, Path) else None})
    runner = config.runner if config.runner != "auto" else _default_runner_name(model)
    result = EvalResult(**scores, n=int(len(labels)), part=config.split, class_names=names, data=bundle.describe(),
                        model=model.describe(), runner=runner, misclassified=misclassified)
    log.info("%s on %s/%s: accuracy %.4f top5 %.4f (n=%d)", model.name, bundle.samples.source, config.split,
             result.accuracy, result.top5, result.n)
    if out_dir is not None:
        write_eval_outputs(result, bundle, wrong[: config.max_misclassified], Path(out_dir))
    with dist.guard():
        return dist.broadcast(result)


def _default_runner_name(model: LoadedModel) -> str:
    from toolchain.runners import default_runner

    return default_runner(model)


def write_eval_outputs(result: EvalResult, bundle: DataBundle, wrong: np.ndarray, out: Path) -> None:
    """metrics.json + confusion matrix PNG + misclassified grid PNG (each written atomically)."""
    from toolchain.report import plots

    out.mkdir(parents=True, exist_ok=True)
    indices = bundle.indices(result.part)
    result.files = {
        "confusion_matrix": str(plots.confusion_matrix(
            result.confusion_matrix, result.class_names, out / CONFUSION_PNG,
            title=f"{result.model.get('architecture', '')} on {bundle.samples.source}/{result.part} "
                  f"(accuracy {result.accuracy:.3f})")),
        "misclassified": str(plots.misclassified_grid(
            [bundle.samples.image(indices[i]) for i in wrong], [m["true"] for m in result.misclassified],
            [m["pred"] for m in result.misclassified], out / MISCLASSIFIED_PNG,
            title=f"misclassified: {len(result.misclassified)} shown")),
        "metrics": str(out / METRICS_FILE),
    }
    write_result(out / METRICS_FILE, result.to_dict())


callable_module(__name__, evaluate)  # `from toolchain import evaluate; evaluate(...)` calls the function
