"""bench library: config validation, timing loops (fake clock), results, backends, bad inputs, compare, report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import write_model_file

from toolchain.bench import BenchConfig, WarmupPolicy, benchmark, compare_results, load_result, rank_entries, timing
from toolchain.bench.inputs import bench_inputs, tile_batch
from toolchain.bench.modelinfo import model_stats
from toolchain.errors import ArtifactError, MissingDependencyError, UserInputError
from toolchain.models import LoadedModel
from toolchain.runners import installed_runners
from toolchain.runners.base import Runner
from toolchain.sources import load_model

QUICK = {"iterations": 3, "warmup": WarmupPolicy(min_iterations=1, min_s=0, window=1)}
LATENCY_KEYS = {"mean", "std", "min", "p50", "p90", "p95", "p99", "max"}
ENTRY_KEYS = {"latency_ms", "throughput_ips", "cv", "iterations", "warmup_iterations", "peak_rss_mb", "model_size_mb",
              "load_s", "first_infer_ms", "params", "macs", "device", "threads", "precision", "includes_h2d"}


@pytest.fixture(scope="module")
def onnx_artifact(exported_tiny_cnn) -> Path:
    """The trained tiny-cnn exported to ONNX by toolchain.export (session-cached in conftest)."""
    return exported_tiny_cnn("onnx")


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"batch_sizes": [0]}, "--batch-size must list whole numbers >= 1"),
    ({"batch_sizes": [4, -1]}, "--batch-size"),
    ({"batch_sizes": []}, "--batch-size"),
    ({"concurrency": [0]}, "--concurrency"),
    ({"iterations": 5, "duration_s": 1.0}, "pass only one"),
    ({"iterations": 0}, "--iterations must be >= 1"),
    ({"duration_s": -1.0}, "--duration must be > 0"),
    ({"threads": 0}, "--threads must be >= 1"),
    ({"device": "tpu"}, "Unknown device 'tpu'"),
    ({"inputs": "reall"}, "Did you mean 'real'"),
    ({"backends": [" "]}, "--backend was given but empty"),
])
def test_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        BenchConfig(**kwargs)


def test_warmup_policy_validation_and_default_duration() -> None:
    with pytest.raises(UserInputError, match="tolerance"):
        WarmupPolicy(tolerance=0)
    with pytest.raises(UserInputError, match="max_s"):
        WarmupPolicy(min_s=5, max_s=1)
    assert BenchConfig().measure_duration_s == 3.0
    assert BenchConfig(iterations=7).measure_duration_s is None
    assert BenchConfig(warmup={"min_s": 0.0}).warmup.min_s == 0.0


# ------------------------------------------------------------------ timing with a fake clock


class FakeClock:
    """perf_counter replacement: each step() advances time by the next scripted duration."""

    def __init__(self, durations: list[float]) -> None:
        self.now, self.durations, self.events = 0.0, list(durations), []

    def __call__(self) -> float:
        self.events.append("clock")
        return self.now

    def step(self) -> None:
        self.events.append("step")
        self.now += self.durations.pop(0) if self.durations else 0.001

    def sync(self) -> None:
        self.events.append("sync")


def test_synchronize_runs_before_the_clock_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock([0.002])
    monkeypatch.setattr(timing, "perf_counter", clock)
    assert timing.timed_call(clock.step, clock.sync) == pytest.approx(0.002)
    assert clock.events == ["clock", "step", "sync", "clock"]


def test_warmup_stops_once_stable_and_respects_minimums(monkeypatch: pytest.MonkeyPatch) -> None:
    # 3 slow calls (compilation), then steady 1 ms calls: needs 2 stable windows of 2 after the slow ones
    clock = FakeClock([0.5, 0.4, 0.3] + [0.001] * 50)
    monkeypatch.setattr(timing, "perf_counter", clock)
    report = timing.warm_up(clock.step, clock.sync, WarmupPolicy(min_iterations=2, min_s=0, window=2))
    assert report.stable and report.iterations == 7
    clock = FakeClock([0.001] * 100)
    monkeypatch.setattr(timing, "perf_counter", clock)
    report = timing.warm_up(clock.step, clock.sync, WarmupPolicy(min_iterations=2, min_s=0.05, window=2))
    assert report.iterations == 50  # the minimum time, not the count, was the binding limit


def test_warmup_gives_up_after_max_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock([0.1, 0.3] * 100)  # never settles
    monkeypatch.setattr(timing, "perf_counter", clock)
    report = timing.warm_up(clock.step, clock.sync, WarmupPolicy(min_iterations=1, min_s=0, max_s=2.0, window=1,
                                                                 tolerance=0.01))
    assert not report.stable and report.seconds >= 2.0


def test_measure_by_count_and_by_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock([0.01] * 1000)
    monkeypatch.setattr(timing, "perf_counter", clock)
    assert len(timing.measure(clock.step, clock.sync, 7, None)) == 7
    assert len(timing.measure(clock.step, clock.sync, None, 1.0, min_iterations=5)) == 100
    assert len(timing.measure(clock.step, clock.sync, None, 0.001, min_iterations=5)) == 5


def test_statistics() -> None:
    stats = timing.latency_stats([0.001, 0.002, 0.003, 0.004, 0.010])
    assert set(stats) == LATENCY_KEYS
    order = [stats[k] for k in ("min", "p50", "p90", "p95", "p99", "max")]
    assert order == sorted(order) and stats["p50"] == pytest.approx(3.0)
    assert timing.coefficient_of_variation([1.0, 1.0, 1.0]) == 0.0
    assert timing.coefficient_of_variation([1.0, 3.0]) == pytest.approx(0.7071, abs=1e-3)


def test_concurrent_runs_every_worker_after_the_barrier() -> None:
    calls = [0, 0, 0]

    def worker(i: int):
        return (lambda: calls.__setitem__(i, calls[i] + 1)), (lambda: None)

    run = timing.measure_concurrent([worker(i) for i in range(3)], WarmupPolicy(min_iterations=2, min_s=0, window=1),
                                    iterations=4, duration_s=None)
    assert len(run.latencies) == 12 and run.wall_s > 0 and len(run.warmup) == 3
    assert all(c >= 6 for c in calls)


def test_peak_rss_is_reported() -> None:
    timing.reset_peak_rss()
    assert timing.peak_rss_mb() > 0
    assert timing.cuda_peak_mb("cpu") is None


# ------------------------------------------------------------------ benchmark()


def test_benchmark_torch_entry_has_design_keys() -> None:
    result = benchmark(["tiny-cnn"], BenchConfig(backends=["torch"], batch_sizes=[1, 4], concurrency=[1, 2], **QUICK))
    data = json.loads(json.dumps(result.to_dict()))
    assert {"env", "entries", "config", "skipped", "notes"} <= set(data)
    assert data["env"]["cpu"]["model"] and "flags" in data["env"]["cpu"] and "torch" in data["env"]["versions"]
    entries = {(e["batch_size"], e["concurrency"]): e for e in data["entries"]}
    assert set(entries) == {(1, 1), (1, 2), (4, 1), (4, 2)}
    single = entries[(4, 1)]
    assert ENTRY_KEYS <= set(single) and set(single["latency_ms"]) == LATENCY_KEYS
    assert single["iterations"] == 3 and single["warmup_iterations"] >= 2 and single["mode"] == "sequential"
    assert single["params"] > 1000 and single["macs"] > single["params"] and single["precision"] == "fp32"
    assert single["includes_h2d"] is False and single["device"] == "cpu"
    assert single["inputs"].startswith("bundled-photos")
    concurrent = entries[(4, 2)]
    assert concurrent["mode"] == "concurrent" and concurrent["iterations"] == 6  # 2 threads x 3 requests


def test_default_backends_cover_every_installed_runner_for_each_format(onnx_artifact: Path) -> None:
    torch_model = load_model("tiny-cnn")
    config = BenchConfig(backends=None, batch_sizes=[2], **QUICK)
    from toolchain.bench import plan_backends

    plan, _ = plan_backends([torch_model, load_model(str(onnx_artifact))], config.backends)
    by_model = {m.name: names for m, names in plan}
    assert "torch" in by_model["tiny-cnn"] and "onnxruntime" not in by_model["tiny-cnn"]
    assert set(by_model["tiny-cnn-onnx"]) == {r for r in ("onnxruntime", "openvino") if r in installed_runners()}
    result = benchmark([torch_model, str(onnx_artifact)], BenchConfig(backends=["torch", "onnxruntime"],
                                                                       batch_sizes=[2], **QUICK))
    runners = {(e.model, e.runner) for e in result.entries}
    assert runners == {("tiny-cnn", "torch"), ("tiny-cnn-onnx", "onnxruntime")}
    onnx_entry = next(e for e in result.entries if e.runner == "onnxruntime")
    assert onnx_entry.params == next(e for e in result.entries if e.runner == "torch").params
    assert onnx_entry.model_size_mb > 0 and onnx_entry.format == "onnx"
    assert any("skipped backend torch" in n for n in result.notes)


def test_requested_backend_that_runs_none_of_the_models_is_an_error() -> None:
    with pytest.raises(UserInputError, match="Backend 'onnxruntime' cannot run torch models"):
        benchmark(["tiny-cnn"], BenchConfig(backends=["onnxruntime"], **QUICK))


def test_unknown_and_missing_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserInputError, match="Unknown backend 'onnxruntim'.*Did you mean 'onnxruntime'"):
        benchmark(["tiny-cnn"], BenchConfig(backends=["onnxruntim"], **QUICK))
    from toolchain import runners

    monkeypatch.setitem(runners.RUNNERS, "tensorrt", ("x", "X", "vtool_no_such_package", ("onnx",)))
    with pytest.raises(MissingDependencyError, match="'tensorrt' is not installed.*Installed backends: torch"):
        benchmark(["tiny-cnn"], BenchConfig(backends=["tensorrt"], **QUICK))


def test_cuda_without_gpu_is_a_clear_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(MissingDependencyError, match="no CUDA GPU is available"):
        benchmark(["tiny-cnn"], BenchConfig(device="cuda", **QUICK))


def test_artifact_that_fails_to_load(onnx_artifact: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken-onnx"
    shutil.copytree(onnx_artifact, broken)
    write_model_file(broken, b"this is not an onnx protobuf")
    with pytest.raises(ArtifactError, match="cannot load"):
        benchmark([str(broken)], BenchConfig(backends=["onnxruntime"], **QUICK))


class FlakyRunner(Runner):
    """Runs batches up to 2 only (like a static-shape model), counts synchronize() calls."""

    name = "flaky"
    formats = ("torch",)
    syncs = 0

    def load_impl(self) -> None:
        pass

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) > 2:
            raise RuntimeError("static batch of 2\nlong backend trace")
        return np.zeros((len(batch), self.spec.num_classes), dtype=np.float32)

    def synchronize(self) -> None:
        FlakyRunner.syncs += 1


def test_failing_batch_size_is_skipped_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from toolchain import runners

    monkeypatch.setitem(runners.RUNNERS, "flaky", ("toolchain.runners.torch_eager", "TorchRunner", "torch", ("torch",)))
    monkeypatch.setattr(runners, "get_runner", lambda name, model, **kw: FlakyRunner(model, **kw))
    result = benchmark(["tiny-cnn"], BenchConfig(backends=["flaky"], batch_sizes=[1, 8], **QUICK))
    assert [e.batch_size for e in result.entries] == [1]
    assert result.skipped[0]["batch_size"] == 8 and result.skipped[0]["reason"] == "RuntimeError: static batch of 2"
    assert FlakyRunner.syncs >= 1 + 1 + 3  # first call, warm-up, measured calls
    with pytest.raises(UserInputError, match="Nothing could be measured: RuntimeError"):
        benchmark(["tiny-cnn"], BenchConfig(backends=["flaky"], batch_sizes=[8], **QUICK))


def test_high_cv_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("toolchain.bench.core.coefficient_of_variation", lambda times: 0.5)
    result = benchmark(["tiny-cnn"], BenchConfig(backends=["torch"], **QUICK))
    assert result.entries[0].high_cv and result.warnings and any("cv 0.50" in n for n in result.entries[0].notes)


# ------------------------------------------------------------------ inputs and model stats


def test_inputs_prefer_real_images(tiny_cnn_model: LoadedModel) -> None:
    x, desc = bench_inputs(tiny_cnn_model, 8)
    assert desc["real"] and desc["source"] == "digits" and x.shape == (8, 3, 32, 32)
    x, desc = bench_inputs(tiny_cnn_model, 8, mode="synthetic")
    assert not desc["real"] and "synthetic" in desc["note"] and x.dtype == np.float32
    batch = tile_batch(x[:3], 7)
    assert batch.shape == (7, 3, 32, 32) and batch.flags.c_contiguous and np.array_equal(batch[3], x[0])


def test_model_stats_for_onnx_artifact_count_initializers(onnx_artifact: Path) -> None:
    stats = model_stats(load_model(str(onnx_artifact)))
    torch_stats = model_stats(load_model("tiny-cnn"))
    assert stats["params"] == torch_stats["params"] and stats["macs"] == torch_stats["macs"]
    assert stats["model_size_mb"] >= torch_stats["model_size_mb"] * 0.9 and stats["precision"] == "fp32"


# ------------------------------------------------------------------ compare, ranking, report


def _entry(runner: str, batch: int, p50: float, ips: float) -> dict:
    return {"model": "m", "runner": runner, "batch_size": batch, "concurrency": 1, "device": "cpu",
            "latency_ms": dict.fromkeys(LATENCY_KEYS, p50), "throughput_ips": ips, "cv": 0.01}


def test_rank_entries_fastest_first_with_speedup_vs_first_measured() -> None:
    ranked = rank_entries([_entry("torch", 1, 10.0, 100.0), _entry("onnxruntime", 1, 5.0, 200.0),
                           _entry("torch", 8, 40.0, 200.0)])
    assert [(e["runner"], e["batch_size"]) for e, _, _ in ranked] == [("onnxruntime", 1), ("torch", 1), ("torch", 8)]
    assert ranked[0][1] == pytest.approx(2.0) and ranked[1][2] and ranked[2][2]


def test_compare_flags_regressions_beyond_threshold(tmp_path: Path) -> None:
    old = {"entries": [_entry("torch", 1, 10.0, 100.0), _entry("onnxruntime", 1, 5.0, 200.0)], "env": {}}
    new = {"entries": [_entry("torch", 1, 10.5, 95.0), _entry("onnxruntime", 1, 6.0, 160.0),
                       _entry("openvino", 1, 4.0, 250.0)], "env": {}}
    comparison = compare_results(old, new, max_regression=0.1)
    status = {r["label"]: r["status"] for r in comparison.rows}
    assert status == {"m / torch / b1": "same", "m / onnxruntime / b1": "regression", "m / openvino / b1": "added"}
    assert not comparison and not comparison.passed
    assert re.search(r"1 of 3 entries regressed more than 10%.*onnxruntime / b1 \+20.0%", comparison.message())
    assert compare_results(old, new, max_regression=0.25)
    with pytest.raises(UserInputError, match="share no"):
        compare_results(old, {"entries": [_entry("x", 2, 1.0, 1.0)]})


def test_load_result_rejects_non_bench_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserInputError, match="not valid JSON"):
        load_result(bad)
    bad.write_text(json.dumps({"accuracy": 0.9}))
    with pytest.raises(UserInputError, match="no 'entries' list"):
        load_result(bad)
    with pytest.raises(UserInputError, match="does not exist"):
        load_result(tmp_path / "missing.json")


def test_report_markdown_and_plot(tmp_path: Path) -> None:
    from toolchain.report.bench import bench_markdown
    from toolchain.report.plots import bench_plot

    result = benchmark(["tiny-cnn"], BenchConfig(backends=["torch"], batch_sizes=[1, 2], **QUICK)).to_dict()
    text = bench_markdown(result)
    assert "| model | runner |" in text and "1.00x (ref)" in text and "CPUs" in text
    png = bench_plot(result, tmp_path / "plot.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_preprocessing_pipelines_agree(tmp_path: Path) -> None:
    from toolchain.bench.preprocessing import BUILDERS, DEFAULT_SPEC, preprocess_throughput, save_photos

    paths = save_photos(tmp_path)
    outputs = {name: build(DEFAULT_SPEC)(paths[0]) for name, build in BUILDERS.items()}
    reference = outputs["torchvision-v2"]
    for out in outputs.values():
        assert out.shape == (3, 224, 224) and np.abs(out - reference).mean() < 1e-3
    import torch

    before = torch.get_num_threads()
    rows = preprocess_throughput(paths[:2], duration_s=0.01, min_rounds=1, pipelines=["pil"])
    assert rows[0]["images"] >= 2 and rows[0]["images_per_s"] > 0 and rows[0]["threads"] == 1
    assert torch.get_num_threads() == before
    with pytest.raises(UserInputError, match="Unknown preprocessing pipeline"):
        preprocess_throughput(paths[:1], pipelines=["opencv"])


def test_concurrency_keeps_the_shared_eager_module_on_its_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Extra per-thread runners of an eager model share its nn.Module: only the measuring runner closes it
    (on CUDA, TorchRunner.close moves the module back to the CPU)."""
    from toolchain.runners.torch_eager import TorchRunner

    closed: list[int] = []
    monkeypatch.setattr(TorchRunner, "close_impl", lambda self: closed.append(id(self)))
    result = benchmark(["tiny-cnn"], BenchConfig(backends=["torch"], batch_sizes=[1, 2], concurrency=[3, 1], **QUICK))
    assert [(e.batch_size, e.concurrency) for e in result.entries] == [(1, 3), (1, 1), (2, 3), (2, 1)]
    assert len(closed) == 1


class NoDeviceRunner(FlakyRunner):
    name = "nodevice"

    def load_impl(self) -> None:
        raise MissingDependencyError("nodevice has no provider for this device here")


def test_default_backends_skip_what_cannot_run_here(monkeypatch: pytest.MonkeyPatch) -> None:
    from toolchain import runners

    real_get_runner = runners.get_runner
    table = {"torch": runners.RUNNERS["torch"], "openvino": runners.RUNNERS["openvino"],
             "nodevice": ("toolchain.runners.torch_eager", "TorchRunner", "torch", ("torch",))}
    monkeypatch.setattr(runners, "RUNNERS", table)
    from toolchain.bench import plan_backends

    plan, notes = plan_backends([load_model("tiny-cnn")], None, device="cuda")
    assert "openvino" not in plan[0][1] and any("do not run on cuda" in n for n in notes)

    def fake(name, model, **kw):
        return NoDeviceRunner(model, **kw) if name == "nodevice" else real_get_runner(name, model, **kw)

    monkeypatch.setattr(runners, "get_runner", fake)
    result = benchmark(["tiny-cnn"], BenchConfig(**QUICK))  # default backends: a missing provider is a note
    assert [e.runner for e in result.entries] == ["torch"]
    assert result.skipped[0]["runner"] == "nodevice" and "no provider" in result.skipped[0]["reason"]
    with pytest.raises(MissingDependencyError, match="no provider"):  # asked for by name: an error
        benchmark(["tiny-cnn"], BenchConfig(backends=["nodevice"], **QUICK))


def test_warmup_window_shrinks_for_slow_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock([2.0] * 50)  # 2 s per call: 2 windows of 5 would need 20 s, more than max_s
    monkeypatch.setattr(timing, "perf_counter", clock)
    report = timing.warm_up(clock.step, clock.sync, WarmupPolicy(min_iterations=1, min_s=0, max_s=10, window=5))
    assert report.stable and report.iterations == 4


def test_compile_time_is_reported_as_compile_s_not_latency(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """A runner that compiles on its first call (torch-compile) gets a warning before that call and the call's
    time as compile_s; the latency statistics never include it. (A stand-in runner: real inductor compilation
    takes a minute here and is covered by the slow runner tests.)"""
    import time as _time

    from toolchain.runners.torch_eager import TorchRunner

    calls = {"n": 0}
    original = TorchRunner.infer_impl

    def slow_first(self, batch):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 1:
            _time.sleep(0.3)  # the "compilation"
        return original(self, batch)

    monkeypatch.setattr(TorchRunner, "compiles_on_first_call", True, raising=False)
    monkeypatch.setattr(TorchRunner, "infer_impl", slow_first)
    caplog.set_level("WARNING", logger="toolchain")
    result = benchmark(["tiny-cnn"], BenchConfig(backends=["torch"], iterations=5, min_iterations=1,
                                                 warmup=WarmupPolicy(min_iterations=1, min_s=0.0, max_s=1.0)))
    entry = result.entries[0]
    assert entry.compile_s is not None and entry.compile_s >= 0.3
    assert entry.latency_ms["max"] < 300  # the compile call is not a latency sample
    assert "compiling on the first call" in caplog.text and any("compile_s" in n for n in entry.notes)
    from toolchain.report.bench import bench_table

    assert "compile s" in [c.header for c in bench_table(result.to_dict()).columns]
