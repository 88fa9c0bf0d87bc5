"""Bad input and faults, each one line on stderr with exit 1 (never a traceback, never exit 3 unless a threshold
was missed): user code that raises or exits, corrupt files, wrong output counts, unwritable or full outputs."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import one_line_error, one_torch_thread, run_cli  # noqa: F401
from PIL import Image

from toolchain.artifact import load_artifact
from toolchain.errors import ArtifactError, VtoolError
from toolchain.sources import load_model

BAD_MODELS = '''
import sys
import torch
from torch import nn


class InitRaises(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        raise RuntimeError("cannot build on this machine")


class ExitInInit(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        sys.exit(3)


class ForwardDict(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        return {"logits": self.fc(x.mean((2, 3)))}


class ForwardRaises(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        raise ValueError("forward exploded")


class ForwardExits(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        sys.exit(3)


class FourLogits(nn.Module):
    """Ignores num_classes: always 4 outputs."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))
'''


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user") / "bad_models.py"
    path.write_text(BAD_MODELS)
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "red.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(path)
    return path


def onnx_file(module: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


@pytest.fixture(scope="module")
def four_class_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from toolchain.models import create_model

    module, _ = create_model("tiny-cnn", num_classes=4)
    return onnx_file(module, torch.randn(2, 3, 32, 32), tmp_path_factory.mktemp("onnx") / "four.onnx")


def forbid(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    """Fail the test if `target` (the command's long work) is reached: a bad output must be refused first."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"{target} ran although its output had to be refused first")

    monkeypatch.setattr(target, refuse)


# ------------------------------------------------------------------ user code


@pytest.mark.parametrize(("cls", "match"), [
    ("InitRaises", "cannot build on this machine"),
    ("ExitInInit", "exit"),
    ("ForwardDict", "dict"),
    ("ForwardRaises", "forward exploded"),
    ("ForwardExits", "exit"),
    ("FourLogits", "4"),
])
def test_user_code_failures_are_one_line_naming_the_file(bad_models: Path, cls: str, match: str) -> None:
    with pytest.raises(VtoolError, match=match):
        load_model(f"{bad_models}:{cls}")
    line = one_line_error(run_cli("eval", "--model", f"{bad_models}:{cls}", "--data", "digits"), match)
    assert "bad_models.py" in line


def test_user_file_calling_exit_at_import_is_not_exit_3(tmp_path: Path) -> None:
    path = tmp_path / "quits.py"
    path.write_text("import sys\nsys.exit(3)\n")
    line = one_line_error(run_cli("eval", "--model", f"{path}:Net", "--data", "digits"), "quits.py")
    assert "exit" in line


# ------------------------------------------------------------------ corrupt or mismatched model files


def test_truncated_checkpoint(trained_tiny_cnn: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pt"
    cut.write_bytes(trained_tiny_cnn.read_bytes()[: trained_tiny_cnn.stat().st_size // 2])
    with pytest.raises(VtoolError, match="cut.pt"):
        load_model(str(cut))
    one_line_error(run_cli("eval", "--model", cut, "--data", "digits"), "cut.pt")


def test_rank_2_onnx_input(tmp_path: Path, image: Path) -> None:
    path = onnx_file(torch.nn.Linear(10, 3), torch.randn(2, 10), tmp_path / "table.onnx")
    one_line_error(run_cli("predict", path, "--image", image), "table.onnx")


def test_four_logits_declared_ten_classes(four_class_onnx: Path, image: Path) -> None:
    from toolchain.runners import run_model

    assert load_model(str(four_class_onnx)).spec.num_classes == 4  # a bare file: its graph declares 4 outputs
    loaded = load_model(str(four_class_onnx), num_classes=10)  # declared otherwise: every answer is checked
    with pytest.raises(VtoolError, match="4"):
        run_model(loaded, np.zeros((1, 3, 32, 32), np.float32))
    one_line_error(run_cli("predict", four_class_onnx, "--image", image, "--num-classes", 10), "--num-classes 4")
    assert run_cli("predict", four_class_onnx, "--image", image).exit_code == 0


def test_num_classes_smaller_than_the_model_outputs(tmp_path: Path) -> None:
    from toolchain.models import create_model

    module, _ = create_model("tiny-cnn", num_classes=10)
    path = onnx_file(module, torch.randn(2, 3, 32, 32), tmp_path / "ten.onnx")
    one_line_error(run_cli("eval", path, "--data", "synthetic", "--num-classes", 4), "10")


def test_artifact_manifest_claiming_another_class_count(exported_tiny_cnn, tmp_path: Path, image: Path) -> None:
    dest = tmp_path / "art"
    shutil.copytree(exported_tiny_cnn("onnx"), dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["spec"].update(num_classes=4, class_names=["a", "b", "c", "d"])
    (dest / "manifest.json").write_text(json.dumps(manifest))
    one_line_error(run_cli("predict", dest, "--image", image), "10")


@pytest.mark.parametrize("change", [
    {"spec": "hello"},
    {"spec": {}},
    {"spec": {"architecture": "x", "num_classes": "ten"}},
    {"spec": {"architecture": "x", "num_classes": 10, "input_size": 5}},
    {"spec": {"architecture": "x", "num_classes": 10, "mean": None}},
    {"model_file": 5},
    {"model_file": ["model.onnx"]},
    {"source": "hello"},
    {"quantization": "hello"},
    {"parity": "hello"},
])
def test_corrupt_manifests_are_one_line(exported_tiny_cnn, tmp_path: Path, image: Path, change: dict) -> None:
    dest = tmp_path / "art"
    shutil.copytree(exported_tiny_cnn("onnx"), dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest.update(change)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="manifest.json"):
        load_artifact(dest)
    one_line_error(run_cli("predict", dest, "--image", image), "manifest.json")


# ------------------------------------------------------------------ flags


@pytest.mark.parametrize("command", [
    ["train", "--model", "tiny-cnn", "--data", "synthetic", "--epochs", "1", "--out", "{tmp}/run"],
    ["eval", "--model", "tiny-cnn", "--data", "digits"],
    ["bench", "tiny-cnn", "--iterations", "2"],
    ["bench", "--preprocess", "--duration", "0.1"],
    ["parity", "tiny-cnn", "tiny-cnn", "--data", "digits"],
    ["quantize", "--model", "tiny-cnn", "--data", "digits", "--out", "{tmp}/q"],
    ["pipeline", "--model", "tiny-cnn", "--data", "digits", "--out", "{tmp}/p"],
])
@pytest.mark.parametrize("threads", ["-1", "0"])
def test_threads_below_one(command: list[str], threads: str, tmp_path: Path) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    one_line_error(run_cli(*args, "--threads", threads), "--threads")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ outputs: checked before the work; faults: one line


def test_json_naming_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid(monkeypatch, "toolchain.evaluate.evaluate")
    one_line_error(run_cli("eval", "--model", "tiny-cnn", "--data", "digits", "--json", tmp_path), "--json")


def read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make `folder` look like a read-only mount (EROFS): running as root, chmod would not stop anything."""
    real = os.statvfs

    def statvfs(path):
        result = real(path)
        if Path(path).resolve() == folder.resolve():
            fields = {k: getattr(result, k) for k in dir(result) if k.startswith("f_")}
            return SimpleNamespace(**{**fields, "f_flag": result.f_flag | os.ST_RDONLY})
        return result

    monkeypatch.setattr(os, "statvfs", statvfs)


def test_train_on_a_read_only_out_fails_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ro").mkdir()
    read_only(monkeypatch, tmp_path / "ro")
    forbid(monkeypatch, "toolchain.train.loop._train_into")
    result = run_cli("train", "--model", "tiny-cnn", "--data", "synthetic", "--epochs", 1, "--out", tmp_path / "ro/run")
    one_line_error(result, "read-only")
    assert list((tmp_path / "ro").iterdir()) == []


def test_json_on_a_read_only_folder_fails_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ro").mkdir()
    read_only(monkeypatch, tmp_path / "ro")
    forbid(monkeypatch, "toolchain.train.loop._train_into")
    result = run_cli("train", "--model", "tiny-cnn", "--data", "synthetic", "--epochs", 1, "--out", tmp_path / "run",
                     "--json", tmp_path / "ro" / "train.json")
    one_line_error(result, "--json")
    assert not (tmp_path / "run").exists()


def test_disk_full_while_writing_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("e.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    result = run_cli("eval", "--model", "tiny-cnn", "--data", "digits", "--json", tmp_path / "e.json")
    one_line_error(result, "No space left")
    assert "e.json" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_saving_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.open

    def full_open(file, mode="r", *args, **kwargs):
        if "w" in mode and ".pt" in Path(file).name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real(file, mode, *args, **kwargs)

    import toolchain.outputs

    monkeypatch.setattr(toolchain.outputs, "open", full_open, raising=False)
    result = run_cli("train", "--model", "tiny-cnn", "--data", "synthetic", "--epochs", 1, "--out", tmp_path / "run")
    # training had started, so its progress bar stays above the error: the error is the one last line
    assert result.exit_code == 1 and "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0]
    assert "No space left" in errors[0] and "best.pt" in errors[0]
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no 0-byte checkpoint, no temp file left


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_disk_full_while_exporting(fmt: str, trained_tiny_cnn: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk made torch's own writers abort the process (exit 134) leaving a 0-byte file: vtool serialises in
    memory and writes the bytes itself, so the fault is an OSError it reports."""
    import builtins

    import toolchain.outputs

    real = builtins.open

    def full_open(file, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real(file, mode, *args, **kwargs)

    monkeypatch.setattr(toolchain.outputs, "open", full_open, raising=False)
    result = run_cli("export", "--model", trained_tiny_cnn, "--format", fmt, "--out", tmp_path / "x", "--no-verify")
    one_line_error(result, "No space left")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_an_empty_model_file_is_never_an_artifact(fmt: str, trained_tiny_cnn: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    if fmt == "torchscript":
        monkeypatch.setattr(torch.jit, "save", lambda module, f, *a, **k: None)
    else:
        monkeypatch.setattr(torch.export, "save", lambda program, f, *a, **k: None)
    result = run_cli("export", "--model", trained_tiny_cnn, "--format", fmt, "--out", tmp_path / "x", "--no-verify")
    one_line_error(result, "empty")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ bench --compare inputs


def bench_json(path: Path, p50: object) -> Path:
    entry = {"model": "m", "runner": "onnxruntime", "batch_size": 1, "concurrency": 1, "device": "cpu",
             "latency_ms": {"p50": p50} if p50 != "missing" else {}, "throughput_ips": 100.0}
    path.write_text(json.dumps({"schema": "vtool-bench/1", "entries": [entry], "env": {}}))
    return path


@pytest.mark.parametrize("p50", [float("nan"), 0, -1.0, "fast", None, "missing", float("inf")])
@pytest.mark.parametrize("side", ["old", "new"])
def test_compare_refuses_results_it_cannot_judge(tmp_path: Path, p50: object, side: str) -> None:
    good = bench_json(tmp_path / "good.json", 1.0)
    bad = bench_json(tmp_path / "bad.json", p50)
    old, new = (bad, good) if side == "old" else (good, bad)
    one_line_error(run_cli("bench", "--compare", old, new), "bad.json")


def test_compare_still_passes_and_gates_on_good_input(tmp_path: Path) -> None:
    old = bench_json(tmp_path / "old.json", 1.0)
    assert run_cli("bench", "--compare", old, bench_json(tmp_path / "same.json", 1.05)).exit_code == 0
    one_line_error(run_cli("bench", "--compare", old, bench_json(tmp_path / "slow.json", 2.0)), "regressed", code=3)
