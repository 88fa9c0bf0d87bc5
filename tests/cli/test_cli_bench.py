"""`vtool bench` CLI: outputs, --compare exit codes, and every bad input as a one-line error (exit 1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import one_line_error, run_cli, write_model_file

QUICK = ["--iterations", "3", "--warmup", "0", "--warmup-iterations", "1"]


def run(*args: str):
    return run_cli("bench", *args)


@pytest.fixture(scope="module")
def onnx_artifact(exported_tiny_cnn) -> Path:
    return exported_tiny_cnn("onnx")


def test_bench_writes_json_markdown_and_plot(tmp_path: Path, onnx_artifact: Path) -> None:
    out = tmp_path / "bench.json"
    result = run("tiny-cnn", str(onnx_artifact), "--backend", "torch,onnxruntime", "--batch-size", "1,2",
                 "--json", str(out), "--markdown", str(tmp_path / "bench.md"), "--plot", str(tmp_path / "b.png"),
                 *QUICK)
    assert result.exit_code == 0, result.output
    assert "vtool bench" in result.stdout and "1.00x (ref)" in result.stdout
    data = json.loads(out.read_text())
    assert {(e["model"], e["runner"], e["batch_size"]) for e in data["entries"]} == {
        ("tiny-cnn", "torch", 1), ("tiny-cnn", "torch", 2),
        ("tiny-cnn-onnx", "onnxruntime", 1), ("tiny-cnn-onnx", "onnxruntime", 2)}
    assert data["env"]["cpu"]["flags"] and all(e["iterations"] == 3 for e in data["entries"])
    assert "| model |" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_no_models_benches_exported_artifacts(tmp_path: Path, onnx_artifact: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(onnx_artifact, tmp_path / "exported" / "cnn-onnx")
    monkeypatch.chdir(tmp_path)
    result = run("--backend", "onnxruntime", "--json", "out.json", *QUICK)
    assert result.exit_code == 0, result.output
    assert [e["model"] for e in json.loads((tmp_path / "out.json").read_text())["entries"]] == ["cnn-onnx"]


@pytest.mark.parametrize(("args", "match"), [
    (["--batch-size", "0"], "--batch-size '0' must list numbers >= 1"),
    (["--batch-size", "-4"], "--batch-size '-4' must list numbers >= 1"),
    (["--batch-size", "8,x"], "comma-separated whole numbers"),
    (["--concurrency", "0"], "--concurrency"),
    (["--backend", "onnxruntim"], "Did you mean 'onnxruntime'"),
    (["--backend", "onnxruntime"], "cannot run torch models"),
    (["--iterations", "3", "--duration", "1"], "pass only one"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--inputs", "random"], "Unknown --inputs 'random'"),
])
def test_bad_input_is_one_line_exit_1(args: list[str], match: str) -> None:
    one_line_error(run("tiny-cnn", *args), match=match)


def test_backend_not_installed_lists_installed_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from toolchain import runners

    monkeypatch.setitem(runners.RUNNERS, "tensorrt", ("x", "X", "vtool_no_such_package", ("torch",)))
    line = one_line_error(run("tiny-cnn", "--backend", "tensorrt", *QUICK), match="not installed")
    assert "Installed backends: torch" in line and "onnxruntime" in line


def test_cuda_without_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    one_line_error(run("tiny-cnn", "--device", "cuda", *QUICK), match="no CUDA GPU is available")


def test_artifact_that_fails_to_load(tmp_path: Path, onnx_artifact: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(onnx_artifact, broken)
    write_model_file(broken, b"\x00garbage")
    one_line_error(run(str(broken), "--backend", "onnxruntime", *QUICK), match="cannot load")
    (broken / "manifest.json").write_text("{")
    one_line_error(run(str(broken), *QUICK), match="not valid JSON")
    one_line_error(run(str(tmp_path / "nope"), *QUICK), match="Unknown model")


def _bench_file(path: Path, p50: float) -> Path:
    entry = {"model": "m", "runner": "torch", "batch_size": 1, "concurrency": 1, "device": "cpu",
             "latency_ms": {"p50": p50}, "throughput_ips": 1000 / p50}
    path.write_text(json.dumps({"entries": [entry], "env": {}}))
    return path


def test_compare_exit_codes(tmp_path: Path) -> None:
    old, new = _bench_file(tmp_path / "old.json", 10.0), _bench_file(tmp_path / "new.json", 12.0)
    result = run("--compare", str(old), str(new), "--max-regression", "0.1")
    line = one_line_error(result, code=3, match="1 of 1 entries regressed more than 10%")
    assert "+20.0%" in line and "regression" in result.stdout
    assert run("--compare", str(old), str(new), "--max-regression", "0.25").exit_code == 0
    assert run("--compare", str(new), str(old)).exit_code == 0  # faster is fine
    one_line_error(run("--compare", str(old), str(tmp_path / "missing.json")), match="does not exist")


def test_preprocess_mode(tmp_path: Path) -> None:
    result = run("--preprocess", "--duration", "0.05", "--json", str(tmp_path / "pre.json"))
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "pre.json").read_text())["preprocess"]
    assert {r["pipeline"] for r in rows} == {"pil", "torchvision-v2", "tv-decode-v2"}
