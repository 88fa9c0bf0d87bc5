"""`vtool pipeline`: train or load -> export -> quantize -> bench -> parity -> report, in one run dir.

Every stage leaves its artifacts under <out>/ and a record in <out>/pipeline.json; a re-run skips
stages whose inputs (configs and upstream file hashes) did not change. A failed stage stops the
run with its message and keeps everything that already succeeded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.artifact import is_artifact_dir, sha256_file
from toolchain.errors import UserInputError, first_line
from toolchain.models import LoadedModel
from toolchain.pipeline.config import PipelineConfig
from toolchain.pipeline.report import RunRecord, build_report, checkpoint_curves
from toolchain.pipeline.state import StageBook
from toolchain.sources import load_model

log = logging.getLogger(__name__)
Notify = Callable[[str], None]


@dataclass
class PipelineResult:
    """The run directory, the report's numbers, each stage's status and the report files.

    Truthy when every artifact met the parity thresholds; `vtool pipeline` turns a failed one into exit 3.
    """

    run_dir: Path
    report: dict[str, Any]
    stages: dict[str, dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)

    @property
    def failed_parity(self) -> list[str]:
        return [row["artifact"] for row in self.report.get("rows", []) if row.get("passed") is False]

    @property
    def passed(self) -> bool:
        return not self.failed_parity

    def __bool__(self) -> bool:
        return self.passed

    def message(self) -> str:
        if self.passed:
            return f"pipeline passed: {self.run_dir}"
        return (f"parity thresholds not met for: {', '.join(self.failed_parity)} "
                f"(see {self.files.get('html', self.run_dir)}).")

    def to_dict(self) -> dict[str, Any]:
        """The report's numbers plus where its files are (what --json writes)."""
        return {**self.report, "files": self.files}


def _probe(model: LoadedModel) -> None:
    """Run one input of the spec's shape: a model that cannot read the data fails here, clearly."""
    import numpy as np

    from toolchain.runners import get_runner

    x = np.zeros(model.spec.input_shape(2), dtype=np.float32)
    try:
        with get_runner("auto", model) as runner:
            runner.infer(x)
    except RuntimeError as exc:
        first = first_line(exc, first_only=True)
        raise UserInputError(
            f"{model.name} cannot read {model.spec.channels}-channel {model.spec.input_size[0]}x"
            f"{model.spec.input_size[1]} images from the data ({first}); pass a model built for this data."
        ) from None


class Pipeline:
    """Holds the run's state while the stages execute; see run_pipeline()."""

    def __init__(self, config: PipelineConfig, notify: Notify | None = None) -> None:
        self.config = config
        self.out: Path = config.out  # type: ignore[assignment]
        self.notify = notify or (lambda message: log.info("%s", message))
        self.out.mkdir(parents=True, exist_ok=True)
        self.book = StageBook(self.out)
        self.reference: LoadedModel | None = None
        self.artifacts: dict[str, Path] = {}
        self.outputs: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ stages
    def stage(self, name: str, inputs: dict[str, Any], work: Callable[[], dict[str, Any]],
              still_valid: Callable[[dict[str, Any]], bool] = lambda o: True) -> dict[str, Any]:
        if self.config.force:
            self.book.previous.pop(name, None)
        self.notify(f"stage {name}")
        self.outputs[name] = self.book.run(name, inputs, work, still_valid)
        return self.outputs[name]

    def trains(self) -> bool:
        from toolchain.models import get_entry, is_registered

        cfg = self.config
        return (cfg.wants("train") and cfg.data is not None and is_registered(cfg.model)
                and not get_entry(cfg.model).pretrained_by_default)

    def load_reference(self) -> LoadedModel:
        cfg = self.config
        if self.trains():
            from toolchain.data import DataConfig
            from toolchain.train import TrainConfig, train

            run_dir = self.out / "train"
            train_cfg = TrainConfig(epochs=cfg.epochs, seed=cfg.seed, overwrite=True)
            data_cfg = DataConfig(source=cfg.data, seed=cfg.seed)

            def work() -> dict[str, Any]:
                result = train(cfg.model, data_cfg, train_cfg, run_dir)
                return {"checkpoint": str(result.best_path), "sha256": sha256_file(result.best_path),
                        "metrics": result.metrics, "epochs_run": result.epochs_run,
                        "curves": str(run_dir / "curves.png")}

            def valid(o: dict[str, Any]) -> bool:
                return Path(o["checkpoint"]).is_file() and sha256_file(o["checkpoint"]) == o["sha256"]

            out = self.stage("train", {"model": cfg.model, "data": cfg.data, "train": train_cfg.__dict__}, work, valid)
            model = load_model(out["checkpoint"])
        else:
            model = load_model(cfg.model)
            if not model.is_torch:
                raise UserInputError(f"'{cfg.model}' is an exported model; the pipeline starts from a trainable or "
                                     "eager model (registry name, checkpoint, run dir, file.py:Class, HF dir).")
        if cfg.data is not None:
            from toolchain.inputs import resolve_bundle

            resolve_bundle(model, cfg.data)  # class-count mismatch -> one-line error before any work
        _probe(model)
        self.reference = model
        return model

    def source_key(self) -> dict[str, Any]:
        assert self.reference is not None
        return {"source": self.reference.source_hash, "data": self.config.data}

    def eval_stage(self) -> None:
        from toolchain.evaluate import EvalConfig, evaluate
        from toolchain.inputs import resolve_bundle

        model = self.reference
        assert model is not None
        out_dir = self.out / "eval"

        def work() -> dict[str, Any]:
            bundle = resolve_bundle(model, self.config.data)
            result = evaluate(model, bundle, EvalConfig(split="test"), out_dir)
            return {"accuracy": result.accuracy, "top5": result.top5, "n": result.n, "files": result.files}

        self.stage("eval", self.source_key(), work, lambda o: Path(o["files"]["metrics"]).is_file())

    def export_stage(self, fmt: str) -> None:
        from toolchain.export import ExportConfig, export_model

        dest = self.out / fmt

        def work() -> dict[str, Any]:
            # a failed verification raises ExportVerificationError (exit 3): the run stops there
            result = export_model(self.reference, ExportConfig(format=fmt, out=dest, data=self.config.data))
            return {"path": str(dest), "sha256": sha256_file(result.artifact.model_path), "time_s": result.time_s,
                    "verification": result.verification}

        out = self.stage(f"export-{fmt}", {**self.source_key(), "format": fmt}, work, self._artifact_valid)
        self.artifacts[fmt] = Path(out["path"])

    def quantize_stage(self, mode: str) -> None:
        from toolchain.pipeline.quant import run_quantization

        dest = self.out / f"int8-{mode}"
        onnx_sha = self.outputs["export-onnx"]["sha256"]
        key = {**self.source_key(), "mode": mode, "onnx": onnx_sha, "samples": self.config.samples,
               "qat_epochs": self.config.qat_epochs, "max_drop": self.config.max_drop}

        def work() -> dict[str, Any]:
            from toolchain.artifact import load_artifact

            details = run_quantization(self.reference, self.artifacts["onnx"], mode, dest, self.config)
            return {**details, "sha256": sha256_file(load_artifact(dest).model_path)}

        out = self.stage(f"quantize-{mode}", key, work, self._artifact_valid)
        self.artifacts[f"int8-{mode}"] = Path(out["path"])

    @staticmethod
    def _artifact_valid(outputs: dict[str, Any]) -> bool:
        path = Path(outputs.get("path", ""))
        if not is_artifact_dir(path):
            return False
        from toolchain.artifact import load_artifact

        try:
            return sha256_file(load_artifact(path).model_path) == outputs.get("sha256")
        except Exception:  # noqa: BLE001 - any unreadable artifact simply re-runs the stage
            return False

    def artifact_keys(self) -> dict[str, Any]:
        return {name: self.outputs[stage]["sha256"] for name, stage in self._artifact_stages().items()}

    def _artifact_stages(self) -> dict[str, str]:
        return {name: (f"export-{name}" if not name.startswith("int8-") else f"quantize-{name[5:]}")
                for name in self.artifacts}

    def bench_stage(self) -> None:
        from toolchain.pipeline.measure import bench_all

        key = {**self.source_key(), "artifacts": self.artifact_keys(), "batch": self.config.batch_sizes,
               "seconds": self.config.bench_seconds, "threads": self.config.threads}
        self.stage("bench", key, lambda: bench_all(self.reference, self.artifacts, self.config, self.out),
                   lambda o: Path(o["json"]).is_file())

    def parity_stage(self) -> None:
        from toolchain.pipeline.measure import parity_all

        key = {**self.source_key(), "artifacts": self.artifact_keys(), "max_drop": self.config.max_drop,
               "min_agreement": self.config.min_agreement, "explain_samples": self.config.explain_samples}
        self.stage("parity", key, lambda: parity_all(self.reference, self.artifacts, self.config, self.out),
                   lambda o: Path(o["json"]).is_file())

    def record(self) -> RunRecord:
        """What the run produced so far, as plain data (what the report is built from)."""
        reference = self.reference
        return RunRecord(run=str(self.config.run), model=self.config.model, data=self.config.data, out=self.out,
                         batch_sizes=list(self.config.batch_sizes), reference_name=reference.name if reference else "",
                         outputs=dict(self.outputs), stages=self.book.summary(), artifacts=list(self.artifacts),
                         curves=checkpoint_curves(reference.checkpoint if reference else None))

    def report_stage(self) -> dict[str, Any]:
        report, files = build_report(self.record())
        self.outputs["report"] = files
        return report


def run_pipeline(config: PipelineConfig, notify: Notify | None = None) -> PipelineResult:
    """Run the configured stages in order; see the module docstring for skipping and failures."""
    pipe = Pipeline(config, notify)
    pipe.load_reference()
    if config.wants("eval") and config.data is not None:
        pipe.eval_stage()
    if config.wants("export"):
        for fmt in config.formats:
            pipe.export_stage(fmt)
    if config.wants("quantize") and "onnx" in pipe.artifacts:
        for mode in config.quantize:
            if mode == "qat" and not (pipe.reference and pipe.reference.is_torch and config.data):
                pipe.notify("skipping qat: it needs a trainable model and labelled --data")
                continue
            pipe.quantize_stage(mode)
    if config.wants("bench"):
        pipe.bench_stage()
    if config.wants("parity") and pipe.artifacts:
        pipe.parity_stage()
    report: dict[str, Any] = {}
    if config.wants("report"):
        report = pipe.report_stage()
    return PipelineResult(pipe.out, report, pipe.book.summary(), pipe.outputs.get("report", {}))
