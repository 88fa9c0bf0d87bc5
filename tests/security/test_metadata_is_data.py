"""Metadata is data: a checkpoint's or a manifest's `spec.build` never makes vtool import code.

Every user file here drops a PWNED marker beside itself when imported, so a test sees whether it ran.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import TINY_USER_MODEL, one_line_error, one_torch_thread, run_cli  # noqa: F401

from toolchain.errors import VtoolError
from toolchain.models.checkpoint import save_checkpoint
from toolchain.sources import load_model

QUICK = ["--iterations", "2", "--warmup", "0", "--warmup-iterations", "1", "--inputs", "synthetic"]
EVIL = 'import pathlib\npathlib.Path(__file__).with_name("PWNED").write_text("imported")\n' + TINY_USER_MODEL


@pytest.fixture()
def evil(tmp_path: Path) -> Path:
    """A model file that records its own import (the class is a valid TinyNet)."""
    path = tmp_path / "evil_net.py"
    path.write_text(EVIL)
    return path


def marker(evil: Path) -> Path:
    return evil.with_name("PWNED")


@pytest.fixture()
def user_checkpoint(evil: Path, tmp_path: Path) -> Path:
    """A vtool checkpoint whose spec.build names evil_net.py:TinyNet (made from a clean copy of the class)."""
    clean = tmp_path / "clean_net.py"
    clean.write_text(TINY_USER_MODEL)
    user = load_model(f"{clean}:TinyNet", num_classes=10)
    spec = user.spec.replace(build={"kind": "user", "path": str(evil), "class": "TinyNet"})
    return save_checkpoint(tmp_path / "run" / "best.pt", user.module, spec)


@pytest.fixture()
def user_artifact(exported_tiny_cnn, evil: Path, tmp_path: Path) -> Path:
    """The tiny-cnn ONNX artifact with its manifest edited to claim a user-class build."""
    dest = tmp_path / "exported" / "shared-onnx"
    shutil.copytree(exported_tiny_cnn("onnx"), dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["spec"]["build"] = {"kind": "user", "path": str(evil), "class": "TinyNet"}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_checkpoint_naming_a_user_class_imports_nothing(user_checkpoint: Path, evil: Path) -> None:
    with pytest.raises(VtoolError, match=r"--model .*evil_net\.py:TinyNet --weights"):
        load_model(str(user_checkpoint))
    assert not marker(evil).exists()


def test_eval_of_such_a_checkpoint_is_one_line_naming_the_flag(user_checkpoint: Path, evil: Path) -> None:
    result = run_cli("eval", user_checkpoint, "--data", "digits")
    one_line_error(result, "--weights")
    assert "evil_net.py:TinyNet" in result.stderr
    assert not marker(evil).exists()


def test_export_of_such_a_checkpoint_is_one_line(user_checkpoint: Path, evil: Path, tmp_path: Path) -> None:
    result = run_cli("export", "--model", user_checkpoint.parent, "--format", "onnx", "--out", tmp_path / "x")
    one_line_error(result, "--model")
    assert not marker(evil).exists() and not (tmp_path / "x").exists()


def test_the_flag_on_the_command_line_is_honoured(user_checkpoint: Path, evil: Path) -> None:
    loaded = load_model(f"{evil}:TinyNet", weights=user_checkpoint)
    assert marker(evil).exists()  # the user asked for this file on the command line
    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        assert loaded.module(x).shape == (1, 10)


def test_bench_counts_macs_without_importing_the_manifest_class(user_artifact: Path, evil: Path) -> None:
    from toolchain.bench.modelinfo import model_stats

    stats = model_stats(load_model(str(user_artifact)))
    assert stats["params"] and not marker(evil).exists()


def test_plain_bench_in_a_workspace_with_a_shared_artifact(user_artifact: Path, evil: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(user_artifact.parent.parent)
    result = run_cli("bench", "--backend", "onnxruntime", *QUICK)
    assert result.exit_code == 0, result.output
    assert not marker(evil).exists()


def test_registry_macs_still_counted_for_artifacts(exported_tiny_cnn) -> None:
    """A registry build is data too (a name in vtool's own registry): MACs stay known for those."""
    from toolchain.bench.modelinfo import model_stats

    assert model_stats(load_model(str(exported_tiny_cnn("onnx"))))["macs"]


@pytest.mark.parametrize(("build", "match"), [
    ({"kind": "hf", "config": {"model_type": "no-such-model"}}, "no-such-model"),
    ({"kind": "registry", "name": "tiny-cnn", "kwargs": {"evil": 1}}, "evil"),
    ({"kind": "registry", "name": "no-such-net"}, "no-such-net"),
    ({"kind": "user"}, "--model"),
    ("hello", "build"),
])
def test_bad_build_records_are_one_line(build, match: str, tmp_path: Path) -> None:
    loaded = load_model("tiny-cnn")
    spec = loaded.spec.replace(build=build) if isinstance(build, dict) else loaded.spec
    path = save_checkpoint(tmp_path / "best.pt", loaded.module, spec)
    if not isinstance(build, dict):
        payload = torch.load(path, weights_only=True)
        payload["spec"]["build"] = build
        torch.save(payload, path)
    with pytest.raises(VtoolError, match=match):
        load_model(str(path))
    one_line_error(run_cli("eval", path, "--data", "digits"))
