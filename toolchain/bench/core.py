"""benchmark(models, BenchConfig) -> BenchResult: every (model, runner, batch size, concurrency) measured alike.

Per runner: create it and time load() (session creation / compilation setup), time the first call at
each batch size, warm up until timings settle, then measure. Backends are Runners only: this module
never imports onnxruntime, openvino or torch.jit (DESIGN.md rule 3).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

from toolchain.bench.config import BenchConfig
from toolchain.bench.inputs import bench_inputs, tile_batch
from toolchain.bench.modelinfo import model_stats
from toolchain.bench.result import BenchEntry, BenchResult
from toolchain.bench.timing import (
    coefficient_of_variation,
    cuda_peak_mb,
    latency_stats,
    measure,
    measure_concurrent,
    peak_rss_mb,
    reset_cuda_peak,
    reset_peak_rss,
    timed_call,
    warm_up,
)
from toolchain.errors import ArtifactError, MissingDependencyError, UserInputError, VtoolError, did_you_mean, first_line
from toolchain.models import LoadedModel
from toolchain.sources import load_model

log = logging.getLogger(__name__)

DEFAULT_MODEL = "simple-cnn"
Progress = Callable[[str], None]


def default_models(root: str | Path = "exported") -> list[str]:
    """What `vtool bench` measures with no arguments: every artifact under `root`, else simple-cnn."""
    from toolchain.artifact import is_artifact_dir

    folder = Path(root)
    found = sorted(str(p) for p in folder.iterdir() if p.is_dir() and is_artifact_dir(p)) if folder.is_dir() else []
    return found or [DEFAULT_MODEL]


def require_device(device: str) -> None:
    """`--device cuda` on a machine without a usable CUDA GPU is a one-line error before any work."""
    if device != "cuda":
        return
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("--device cuda needs PyTorch with CUDA; install it or use --device cpu.") from None
    if not torch.cuda.is_available():
        raise MissingDependencyError("--device cuda was requested but no CUDA GPU is available here; use --device cpu.")


def runs_on(name: str, device: str) -> bool:
    """Whether a runner class supports `device` (runner modules import their backends lazily: cheap)."""
    import importlib

    from toolchain.runners import RUNNERS

    module, cls, _, _ = RUNNERS[name]
    try:
        return device in getattr(importlib.import_module(module), cls).devices
    except (ImportError, AttributeError):
        return True  # let get_runner report the real problem


def plan_backends(models: list[LoadedModel], requested: list[str] | None,
                  device: str = "cpu") -> tuple[list[tuple[LoadedModel, list[str]]], list[str]]:
    """Which runners measure which model, plus notes on what was skipped and why.

    Without `requested`: every installed runner that can run each model's format. With it: unknown or
    missing backends are errors, and so is a backend that can run none of the models; a backend that
    runs only some of them skips the others with a note (e.g. torch with an fp32 module + an ONNX file).
    """
    from toolchain.runners import RUNNERS, installed_runners, model_format, only_runtimes, runners_for

    installed = installed_runners()
    notes: list[str] = []
    if requested:
        for name in requested:
            if name not in RUNNERS:
                raise UserInputError(f"Unknown backend '{name}': expected one of {', '.join(RUNNERS)}."
                                     f"{did_you_mean(name, list(RUNNERS))} Installed: {', '.join(installed)}.")
            if name not in installed:
                raise MissingDependencyError(f"Backend '{name}' is not installed (needs the Python package "
                                             f"'{RUNNERS[name][2]}'). Installed backends: {', '.join(installed)}.")
            if not any(name in runners_for(m) for m in models):
                usable = ", ".join(sorted({r for m in models for r in runners_for(m)}))
                restricted = {m.name: only_runtimes(m) for m in models if model_format(m) in RUNNERS[name][3]
                              and only_runtimes(m)}
                if restricted:
                    allowed = sorted({r for runtimes in restricted.values() for r in runtimes})
                    raise UserInputError(
                        f"Backend '{name}' cannot run {', '.join(restricted)}: its manifest restricts it to "
                        f"{', '.join(allowed)} (the graph uses that runtime's own fused ops). Backends for these "
                        f"models: {usable}."
                    )
                formats = sorted({model_format(m) for m in models})
                raise UserInputError(
                    f"Backend '{name}' cannot run {', '.join(formats)} models; it runs {', '.join(RUNNERS[name][3])}. "
                    f"Backends for these models: {usable}."
                )
    plan = []
    off_device = [] if requested else [r for r in installed if not runs_on(r, device)]
    if off_device:
        notes.append(f"skipped backends that do not run on {device}: {', '.join(off_device)}")
    for model in models:
        able = [r for r in runners_for(model) if r not in off_device]
        chosen = [r for r in requested if r in able] if requested else able
        if requested:
            for name in requested:
                if name not in able:
                    notes.append(f"{model.name}: skipped backend {name} (it cannot run a {model_format(model)} model)")
        if not chosen:
            notes.append(f"{model.name}: no installed backend runs format {model_format(model)}")
            continue
        plan.append((model, chosen))
    if not plan:
        raise UserInputError("No installed backend can run the given models; " + "; ".join(notes) + ".")
    return plan, notes


def load_runner(name: str, model: LoadedModel, config: BenchConfig) -> tuple[Any, float]:
    """Create and load a runner; returns it and the load (session creation) time in seconds."""
    from toolchain.runners import get_runner

    runner = get_runner(name, model, device=config.device, threads=config.threads, **config.runner_options)
    start = perf_counter()
    try:
        runner.load()
    except VtoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - backend-specific load failures become one line
        reason = first_line(exc, first_only=True, typed=True)
        raise ArtifactError(f"Backend '{name}' could not load {model.name}: {reason}") from None
    return runner, perf_counter() - start


def _sequential(runner: Any, x: np.ndarray, config: BenchConfig) -> dict[str, Any]:
    def step() -> object:
        return runner.infer(x)

    warm = warm_up(step, runner.synchronize, config.warmup)
    times = measure(step, runner.synchronize, config.iterations, config.measure_duration_s, config.min_iterations)
    return {"times": times, "wall_s": sum(times), "warmup": warm.iterations, "warmup_s": warm.seconds,
            "stable": warm.stable, "notes": []}


def _concurrent(runner: Any, model: LoadedModel, name: str, x: np.ndarray, threads: int,
                config: BenchConfig) -> dict[str, Any]:
    """`threads` requests in flight; runners not marked `thread_safe` get one instance per thread."""
    shared = bool(getattr(runner, "thread_safe", False))
    extra = [] if shared else [load_runner(name, model, config)[0] for _ in range(threads - 1)]
    instances = [runner] * threads if shared else [runner, *extra]
    try:
        workers = []
        for instance in instances:
            batch = x.copy()
            workers.append((lambda r=instance, b=batch: r.infer(b), instance.synchronize))
        run = measure_concurrent(workers, config.warmup, config.iterations, config.measure_duration_s,
                                 config.min_iterations)
    finally:
        for instance in extra:
            # eager-module runners share one nn.Module: closing one (CUDA: module.to("cpu")) would pull the
            # weights from under the runner that measures the next entry, so only artifact runners are closed
            if instance.model.module is None:
                instance.close()
    note = "one shared runner" if shared else f"{threads} runner instances (backend not marked thread-safe)"
    return {"times": run.latencies, "wall_s": run.wall_s, "warmup": sum(w.iterations for w in run.warmup),
            "warmup_s": max(w.seconds for w in run.warmup), "stable": all(w.stable for w in run.warmup),
            "notes": [f"{threads} threads, each sending batches of {len(x)}; {note}"]}


def _entry(run: dict[str, Any], model: LoadedModel, name: str, batch: int, threads: int, config: BenchConfig,
           stats: dict[str, Any], inputs: dict[str, Any], load_s: float, first_s: float, rss_reset: bool) -> BenchEntry:
    times = run["times"]
    cv = coefficient_of_variation(times)
    notes = list(run["notes"]) + list(stats.get("stats_notes", []))
    if inputs.get("note"):
        notes.append(inputs["note"])
    if not run["stable"]:
        notes.append("warm-up timings had not settled when the warm-up time limit ran out")
    high = cv > config.cv_threshold
    if high:
        notes.append(f"cv {cv:.2f} > {config.cv_threshold:.2f}: noisy timings; rerun on a quieter machine or longer")
        log.warning("%s / %s / batch %d: coefficient of variation %.2f is high (> %.2f); timings are noisy",
                    model.name, name, batch, cv, config.cv_threshold)
    return BenchEntry(
        model=model.name, runner=name, batch_size=batch, concurrency=threads, device=config.device,
        threads=config.threads, format=stats["format"], precision=stats["precision"],
        latency_ms=latency_stats(times), throughput_ips=round(batch * len(times) / run["wall_s"], 3), cv=cv,
        iterations=len(times), warmup_iterations=1 + run["warmup"], warmup_s=round(run["warmup_s"], 3),
        warmup_stable=run["stable"], measure_s=round(run["wall_s"], 3), load_s=round(load_s, 4),
        first_infer_ms=round(first_s * 1e3, 3), peak_rss_mb=peak_rss_mb(), model_size_mb=stats["model_size_mb"],
        params=stats["params"], macs=stats["macs"], includes_h2d=config.device == "cuda",
        inputs=inputs["source"], mode="sequential" if threads == 1 else "concurrent",
        peak_rss_scope="since runner load" if rss_reset else "process lifetime",
        cuda_peak_mb=cuda_peak_mb(config.device), high_cv=high, source=model.origin, notes=notes,
    )


def backend_info(runner: Any) -> dict[str, Any]:
    """What the runner says about itself (e.g. ONNX Runtime providers), minus what the entry already holds."""
    try:
        info = dict(runner.describe())
    except Exception as exc:  # noqa: BLE001 - describing must never fail a measurement
        log.debug("describe() failed: %s", exc)
        return {}
    return {k: v for k, v in info.items() if k not in ("runner", "device", "threads", "model")}


def bench_runner(model: LoadedModel, name: str, stats: dict[str, Any], pool: np.ndarray, inputs: dict[str, Any],
                 config: BenchConfig, progress: Progress | None = None) -> tuple[list[BenchEntry], list[dict]]:
    """All batch sizes and concurrency levels of one (model, runner) pair."""
    entries: list[BenchEntry] = []
    skipped: list[dict[str, Any]] = []
    gc.collect()
    rss_reset = reset_peak_rss()
    reset_cuda_peak(config.device)
    runner, load_s = load_runner(name, model, config)
    try:
        for batch in config.batch_sizes:
            x = tile_batch(pool, batch)
            for threads in config.concurrency:
                if progress:
                    progress(f"{model.name} / {name} / batch {batch}" + (f" x{threads}" if threads > 1 else ""))
                try:
                    if threads == config.concurrency[0]:
                        if getattr(runner, "compiles_on_first_call", False):
                            log.warning("%s / %s / batch %d: compiling on the first call (can take a minute or "
                                        "more on CPU); reported as compile_s, not as latency", model.name, name,
                                        batch)
                        first_s = timed_call(lambda batch=x: runner.infer(batch), runner.synchronize)
                    run = (_sequential(runner, x, config) if threads == 1
                           else _concurrent(runner, model, name, x, threads, config))
                except Exception as exc:  # noqa: BLE001 - e.g. a static-batch model at another batch size
                    reason = str(exc) if isinstance(exc, VtoolError) else first_line(exc, first_only=True, typed=True)
                    log.warning("%s / %s / batch %d skipped: %s", model.name, name, batch, reason)
                    skipped.append({"model": model.name, "runner": name, "batch_size": batch,
                                    "concurrency": threads, "reason": reason})
                    if threads == config.concurrency[0]:
                        break
                    continue
                entry = _entry(run, model, name, batch, threads, config, stats, inputs, load_s, first_s, rss_reset)
                entry.backend_info = backend_info(runner)
                if getattr(runner, "compiles_on_first_call", False):
                    entry.compile_s = round(first_s, 3)
                    entry.notes.append(f"compile: the first call at batch {batch} took {first_s:.1f} s (compile_s); "
                                       "latency is measured after it")
                entries.append(entry)
    finally:
        runner.close()
    return entries, skipped


def benchmark(models: Sequence[LoadedModel | str], config: BenchConfig | None = None,
              progress: Progress | None = None) -> BenchResult:
    """Measure every model on every selected runner, batch size and concurrency level."""
    from toolchain.envinfo import environment

    config = config or BenchConfig()
    if not models:
        raise UserInputError("No models to benchmark; pass a registry name, checkpoint or artifact directory.")
    require_device(config.device)
    loaded = [m if isinstance(m, LoadedModel) else load_model(m) for m in models]
    plan, notes = plan_backends(loaded, config.backends, config.device)
    entries: list[BenchEntry] = []
    skipped: list[dict[str, Any]] = []
    for model, runner_names in plan:
        stats = model_stats(model)
        pool, inputs = bench_inputs(model, max(config.batch_sizes), config.inputs, config.data, config.seed)
        if inputs.get("note"):
            notes.append(f"{model.name}: {inputs['note']}")
        for name in runner_names:
            try:
                done, missed = bench_runner(model, name, stats, pool, inputs, config, progress)
            except MissingDependencyError as exc:
                if config.backends:  # asked for by name: its absence is the user's error
                    raise
                log.warning("%s / %s skipped: %s", model.name, name, exc)
                skipped.append({"model": model.name, "runner": name, "batch_size": None, "reason": str(exc)})
                continue
            entries += done
            skipped += missed
    if not entries:
        raise UserInputError(f"Nothing could be measured: {skipped[0]['reason'] if skipped else 'no entries'}")
    env = environment(config.device, config.threads)
    return BenchResult(entries, env, config.to_dict(), skipped, notes)
