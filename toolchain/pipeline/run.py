"""`vtool pipeline`: train or load -> export -> quantize -> bench -> parity -> report, in one run dir.

Every stage leaves its artifacts under <out>/ and a record in <out>/pipeline.json; a re-run skips
stages whose inputs (configs and upstream file hashes) did not change. A failed stage is recorded with
its reason; the run goes on with every stage that does not need its output, and the report is written
either way, with the failure on the page. Bad input found before any stage ran is a plain one-line error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.artifact import is_artifact_dir, sha256_file
from toolchain.errors import ThresholdError, UserInputError, VtoolError, first_line
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
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> {"error", "exit_code"}

    @property
    def failed_parity(self) -> list[str]:
        return [row["artifact"] for row in self.report.get("rows", []) if row.get("passed") is False]

    @property
    def passed(self) -> bool:
        return not self.failed_parity and not self.failures

    @property
    def exit_code(self) -> int:
        """3 when only quality gates failed, 1 when a stage failed for another reason (bad input, a crash)."""
        codes = [f.get("exit_code", 1) for f in self.failures.values()]
        return 1 if any(code != ThresholdError.exit_code for code in codes) else ThresholdError.exit_code

    def __bool__(self) -> bool:
        return self.passed

    def message(self) -> str:
        if self.passed:
            return f"pipeline passed: {self.run_dir}"
        parts = [f"stage {name} failed: {f['error']}" for name, f in self.failures.items()]
        if self.failed_parity:
            parts.append(f"parity thresholds not met for: {', '.join(self.failed_parity)}")
        where = self.files.get("html") or self.run_dir
        return f"{'; '.join(parts)} (see {where})."

    def to_dict(self) -> dict[str, Any]:
        """The report's numbers plus where its files are (what --json writes)."""
        return {**self.report, "files": self.files, "failures": self.failures}


def _probe(model: LoadedModel) -> None:
    """Run one input of the spec's shape: a model that cannot read the data fails here, clearly."""
    import numpy as np

    from toolchain.runners import get_runner

    x = np.zeros(model.spec.input_shape(2), dtype=np.float32)
    try:
        with get_runner("auto", model) as runner:
            runner.infer(x)
    except (RuntimeError, UserInputError) as exc:
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
        self.failures: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ stages
    def stage(self, name: str, inputs: dict[str, Any], work: Callable[[], dict[str, Any]],
              still_valid: Callable[[dict[str, Any]], bool] = lambda o: True) -> dict[str, Any]:
        """Run (or skip) one stage; a failure is recorded with its one-line reason and raised as StageFailed."""
        if self.config.force:
            self.book.previous.pop(name, None)
        self.notify(f"stage {name}")
        try:
            self.outputs[name] = self.book.run(name, inputs, work, still_valid)
        except Exception as exc:  # noqa: BLE001 - any stage error goes on the report; Ctrl-C is not caught
            reason = str(exc) if isinstance(exc, VtoolError) else first_line(exc, 300, typed=True)
            self.failures[name] = {"error": " ".join(reason.split()),
                                   "exit_code": getattr(exc, "exit_code", 1)}
            log.debug("stage %s failed", name, exc_info=True)
            self.notify(f"stage {name} FAILED: {self.failures[name]['error']}")
            raise StageFailed(name) from exc
        return self.outputs[name]

    def trains(self) -> bool:
        """Registry models without pretrained weights, and file.py:Class models without --weights, are trained."""
        from toolchain.models import get_entry, is_registered
        from toolchain.models.user import parse_user_ref

        cfg = self.config
        if not cfg.wants("train") or cfg.data is None or cfg.options.weights is not None:
            return False
        if parse_user_ref(cfg.model) is not None:
            return True
        return is_registered(cfg.model) and not (get_entry(cfg.model).pretrained_by_default or cfg.options.pretrained)

    def data_config(self) -> Any:
        from toolchain.data import DataConfig

        cfg = self.config
        return DataConfig(source=cfg.data, seed=cfg.seed, split_file=cfg.split_file, test_data=cfg.test_data)

    def load_reference(self) -> LoadedModel:
        cfg = self.config
        if self.trains():
            from toolchain.train import TrainConfig, train

            run_dir = self.out / "train"
            train_cfg = TrainConfig(epochs=cfg.epochs, seed=cfg.seed, overwrite=True)
            data_cfg = self.data_config()
            _probe(load_model(cfg.model, options=cfg.options, data=cfg.data))  # fail before training, clearly

            def work() -> dict[str, Any]:
                result = train(cfg.model, data_cfg, train_cfg, run_dir, options=cfg.options)
                return {"checkpoint": str(result.best_path), "sha256": sha256_file(result.best_path),
                        "metrics": result.metrics, "epochs_run": result.epochs_run,
                        "curves": str(run_dir / "curves.png")}

            def valid(o: dict[str, Any]) -> bool:
                return Path(o["checkpoint"]).is_file() and sha256_file(o["checkpoint"]) == o["sha256"]

            key = {"model": cfg.model, "data": cfg.data, "train": train_cfg.__dict__, "split": self.split_key(),
                   "options": cfg.options.to_dict()}
            out = self.stage("train", key, work, valid)
            if ".py:" in cfg.model:  # a user's class: named again, never imported from the checkpoint's metadata
                model = load_model(cfg.model, options=cfg.options.merged(weights=out["checkpoint"]), data=cfg.data)
            else:
                model = load_model(out["checkpoint"])
        else:
            model = load_model(cfg.model, options=cfg.options, data=cfg.data)
            if not model.is_torch:
                raise UserInputError(f"'{cfg.model}' is an exported model; the pipeline starts from a trainable or "
                                     "eager model (registry name, checkpoint, run dir, file.py:Class, HF dir).")
        if cfg.data is not None:
            bundle = self.bundle(model)  # class-count mismatch, a bad split file -> one-line error before any work
            if "split" not in model.info:  # the run's split, recorded so every later stage (and artifact) reuses it
                from dataclasses import asdict

                model.info.update(data_config=asdict(bundle.config), split=bundle.split, data=bundle.describe())
        _probe(model)
        self.reference = model
        return model

    def bundle(self, model: LoadedModel | None = None) -> Any:
        """The run's data for the reference: its recorded split, the --split-file, or a --test-data holdout."""
        from toolchain.inputs import resolve_bundle

        cfg = self.config
        return resolve_bundle(model or self.reference, cfg.data, split_file=cfg.split_file,  # type: ignore[arg-type]
                              test_data=cfg.test_data)

    def split_key(self) -> dict[str, Any]:
        from toolchain.datasplit import describe_split

        return describe_split(self.config.split_file, self.config.test_data)

    def source_key(self) -> dict[str, Any]:
        assert self.reference is not None
        return {"source": self.reference.source_hash, "data": self.config.data, "split": self.split_key(),
                "spec": self.reference.spec.to_dict()}

    def eval_stage(self) -> None:
        from toolchain.evaluate import EvalConfig, evaluate

        model = self.reference
        assert model is not None
        out_dir = self.out / "eval"

        def work() -> dict[str, Any]:
            result = evaluate(model, self.bundle(model), EvalConfig(split="test"), out_dir)
            return {"accuracy": result.accuracy, "top5": result.top5, "n": result.n, "files": result.files}

        self.stage("eval", self.source_key(), work, lambda o: Path(o["files"]["metrics"]).is_file())

    def export_stage(self, fmt: str) -> None:
        from toolchain.export import ExportConfig, export_model

        dest = self.out / fmt

        def work() -> dict[str, Any]:
            # a failed verification raises ExportVerificationError (exit 3): the run stops there
            result = export_model(self.reference, ExportConfig(format=fmt, out=dest, data=self.config.data,
                                                               overwrite=True))  # the run's own artifact
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
               "min_agreement": self.config.min_agreement, "gate": self.config.gate}
        self.stage("parity", key, lambda: parity_all(self.reference, self.artifacts, self.config, self.out),
                   lambda o: Path(o["json"]).is_file())

    def record(self) -> RunRecord:
        """What the run produced so far, as plain data (what the report is built from)."""
        reference = self.reference
        return RunRecord(run=str(self.config.run), model=self.config.model, data=self.config.data, out=self.out,
                         batch_sizes=list(self.config.batch_sizes), reference_name=reference.name if reference else "",
                         outputs=dict(self.outputs), stages=self.book.summary(), artifacts=list(self.artifacts),
                         curves=checkpoint_curves(reference.checkpoint if reference else None),
                         failures=dict(self.failures), classes=list(reference.spec.labels) if reference else [],
                         gate=self.config.thresholds.statement, split=self.split_key())

    def report_stage(self) -> dict[str, Any]:
        report, files = build_report(self.record())
        self.outputs["report"] = files
        return report


class StageFailed(Exception):
    """A stage failed and was recorded in Pipeline.failures: skip what needs it, go on with the rest."""


def run_pipeline(config: PipelineConfig, notify: Notify | None = None) -> PipelineResult:
    """Run the configured stages in order; see the module docstring for skipping and failures."""
    pipe = Pipeline(config, notify)

    def attempt(step: Callable[[], Any]) -> bool:
        try:
            step()
        except StageFailed:
            return False
        return True

    if attempt(pipe.load_reference):
        if config.wants("eval") and config.data is not None:
            attempt(pipe.eval_stage)
        if config.wants("export"):
            for fmt in config.formats:
                attempt(lambda fmt=fmt: pipe.export_stage(fmt))
        if config.wants("quantize") and "onnx" in pipe.artifacts:
            for mode in config.quantize:
                if mode == "qat" and not (pipe.reference and pipe.reference.is_torch and config.data):
                    pipe.notify("skipping qat: it needs a trainable model and labelled --data")
                    continue
                attempt(lambda mode=mode: pipe.quantize_stage(mode))
        elif config.wants("quantize") and config.quantize and "export-onnx" in pipe.failures:
            pipe.notify("skipping quantize: it needs the onnx export, which failed")
        if config.wants("bench"):
            attempt(pipe.bench_stage)
        if config.wants("parity") and pipe.artifacts:
            attempt(pipe.parity_stage)
    report: dict[str, Any] = {}
    if config.wants("report"):
        report = pipe.report_stage()
    return PipelineResult(pipe.out, report, pipe.book.summary(), pipe.outputs.get("report", {}), dict(pipe.failures))
