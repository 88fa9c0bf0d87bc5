"""Experiment tracking (`--track mlflow`): params, per-epoch metrics, bench and parity figures and the artifacts
of a train / quantize / bench / pipeline run, in a local MLflow store (`mlruns/` beside --out, or in the
working directory; no server). Off by default: get_tracker(None) is a Tracker that does nothing, so callers
never branch on it. MLflow is an optional extra (`pip install 'vtool[track]'`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from toolchain.errors import MissingDependencyError, UserInputError

log = logging.getLogger(__name__)

TRACKERS = ("mlflow",)
EXPERIMENT = "vtool"


class Tracker:
    """The no-op tracker (tracking off); MlflowTracker records the same calls."""

    enabled = False
    run_id: str | None = None
    uri: str | None = None

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None: ...

    def set_tags(self, tags: dict[str, Any]) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become their JSON text."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else value
    return flat


def _metric_name(name: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", name)[:250]


class MlflowTracker(Tracker):
    """One MLflow run in a local store (file store under `mlruns/` unless `uri` names another)."""

    enabled = True

    def __init__(self, uri: str, run_name: str, experiment: str = EXPERIMENT) -> None:
        try:
            import mlflow
        except ImportError:
            raise MissingDependencyError("--track mlflow needs MLflow: pip install 'vtool[track]' "
                                         "(mlflow-skinny), or drop --track.") from None
        if uri.startswith("file:"):
            # MLflow 3 keeps the plain-files store in maintenance mode behind this opt-in; it needs no server or DB
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.uri = uri
        self.client = mlflow.MlflowClient(uri)
        try:
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            self.run = self.client.create_run(experiment_id, run_name=run_name)
        except Exception as exc:  # noqa: BLE001 - any store problem is the user's to fix: one line
            raise UserInputError(f"Could not open the MLflow store '{uri}': {str(exc).splitlines()[0][:160]}") from None
        self.run_id = self.run.info.run_id
        log.info("tracking to MLflow run %s in %s", self.run_id, uri)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = {k: str(v)[:500] for k, v in flatten(params).items() if v is not None}
        items = [Param(k, v) for k, v in flat.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_metric_name(k), float(v), now, step or 0) for k, v in flatten(metrics).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start:start + 500])

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), folder or path.name)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), folder)

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def default_uri(out: str | Path | None = None) -> str:
    """`mlruns/` beside --out (its parent folder), else in the working directory, as a file: URI."""
    base = Path(out).resolve().parent if out is not None else Path.cwd()
    return (base / "mlruns").as_uri()


@contextmanager
def tracking(kind: str | None, run_name: str, out: str | Path | None = None, uri: str | None = None,
             command: str = "") -> Iterator[Tracker]:
    """The tracker for `--track KIND` (None: the no-op one); the run ends FAILED when the body raised."""
    if kind is None:
        yield Tracker()
        return
    if kind not in TRACKERS:
        from toolchain.errors import did_you_mean

        raise UserInputError(f"Unknown tracker '{kind}': expected one of {', '.join(TRACKERS)}."
                             f"{did_you_mean(kind, TRACKERS)}")
    tracker = MlflowTracker(uri or default_uri(out), run_name)
    tracker.set_tags({"vtool.command": command} if command else {})
    try:
        yield tracker
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close()


# ------------------------------------------------------------------ what each stage records


def epoch_logger(tracker: Tracker) -> Any:
    """A train(progress_callback) that records every finished epoch's loss, accuracy and validation figures."""

    def on_progress(p: Any) -> None:
        if p.epoch_done:
            tracker.log_metrics({"train_loss": p.loss, "train_accuracy": p.accuracy, "lr": p.lr,
                                 "val_loss": p.val_loss, "val_accuracy": p.val_accuracy}, step=p.epoch)

    return on_progress


def log_train(tracker: Tracker, result: Any, params: dict[str, Any]) -> None:
    tracker.log_params(params)
    # the best checkpoint's figures; its val_* would otherwise land in the per-epoch series at step 0
    tracker.log_metrics({(f"best_{k}" if k.startswith("val_") else k): v for k, v in result.metrics.items()})
    for name in ("history.json", "curves.png", "result.json", "best.pt"):
        tracker.log_artifact(Path(result.out_dir) / name, "run")


def log_quantize(tracker: Tracker, result: Any, params: dict[str, Any]) -> None:
    tracker.log_params(params)
    tracker.log_metrics({k: v for k, v in result.summary.items() if isinstance(v, (int, float))})
    tracker.set_tags({"passed": result.passed})
    if result.path is not None:
        tracker.log_artifact(result.path, "artifact")


def bench_metrics(entries: list[dict[str, Any]]) -> dict[str, float]:
    """p50 latency and throughput per (model, runner, batch[, concurrency])."""
    metrics: dict[str, float] = {}
    for e in entries:
        key = f"{e['model']}/{e['runner']}/b{e['batch_size']}" + (
            f"/c{e['concurrency']}" if int(e.get("concurrency", 1)) > 1 else "")
        metrics[f"{key}/p50_ms"] = e["latency_ms"]["p50"]
        metrics[f"{key}/throughput_ips"] = e["throughput_ips"]
    return metrics


def log_bench(tracker: Tracker, data: dict[str, Any], json_path: str | Path | None = None) -> None:
    tracker.log_params({"bench": data.get("config", {})})
    tracker.log_metrics(bench_metrics(data.get("entries", [])))
    tracker.set_tags({f"env.{k}": v for k, v in flatten(data.get("env", {})).items()})
    if json_path is not None:
        tracker.log_artifact(json_path)


def parity_metrics(name: str, parity: dict[str, Any]) -> dict[str, Any]:
    keys = ("agreement", "top1_cand", "top1_delta", "cosine_mean", "sqnr_db", "max_abs_diff")
    out = {f"parity/{name}/{k}": parity.get(k) for k in keys}
    for k in ("spearman_mean", "spearman_worst", "iou_mean", "iou_worst"):
        out[f"explain/{name}/{k}"] = (parity.get("explanation") or {}).get(k)
    return out


def log_pipeline(tracker: Tracker, result: Any, params: dict[str, Any]) -> None:
    """A pipeline run: config, per-epoch training history, bench and parity figures, the reports and plots."""
    tracker.log_params(params)
    run_dir = Path(result.run_dir)
    history = run_dir / "train" / "history.json"
    if history.is_file():
        for row in json.loads(history.read_text()):
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
    for name in ("bench.json", "parity.json"):
        path = run_dir / name
        if path.is_file():
            data = json.loads(path.read_text())
            if name == "bench.json":
                tracker.log_metrics(bench_metrics(data.get("entries", [])))
            else:
                for artifact, parity in data.items():
                    tracker.log_metrics(parity_metrics(artifact, parity))
            tracker.log_artifact(path, "results")
    for path in sorted(run_dir.glob("*.png")) + [Path(p) for p in result.files.values()]:
        tracker.log_artifact(path, "report")
    tracker.set_tags({"passed": result.passed})
