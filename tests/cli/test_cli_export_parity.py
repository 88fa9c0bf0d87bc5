"""`vtool export` and `vtool parity`: exit codes 0 / 1 (one-line error) / 3 (threshold), JSON output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import UNSUPPORTED, damaged_checkpoint, one_line_error
from helpers import run_cli as vtool


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-user") / "weird.py"
    path.write_text(UNSUPPORTED)
    return path


def test_export_writes_artifact_and_json(tmp_path: Path, trained_tiny_cnn: Path) -> None:
    out, report = tmp_path / "cnn-pt2", tmp_path / "export.json"
    result = vtool("export", "--model", trained_tiny_cnn, "--format", "pt2", "--out", out, "--samples", "16",
                   "--json", report)
    assert result.exit_code == 0, result.stderr
    assert "max abs diff" in result.stdout and (out / "model.pt2").is_file()
    data = json.loads(report.read_text())
    assert data["status"] == "ok" and data["format"] == "pt2" and data["verification"]["passed"]
    assert set(data["verification"]["batches"]) == {"1", "2", "7"}


def test_parity_cli_passes_for_export(trained_tiny_cnn: Path, exported_tiny_cnn, tmp_path: Path) -> None:
    report = tmp_path / "parity.json"
    result = vtool("parity", trained_tiny_cnn, exported_tiny_cnn("onnx"), "--json", report)
    assert result.exit_code == 0, result.stderr
    assert "PASSED" in result.stdout and "top-1 agreement" in result.stdout
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["agreement"] == 1.0 and data["sqnr_db"]


def test_parity_cli_fails_with_exit_3_naming_classes(trained_tiny_cnn: Path, tmp_path: Path) -> None:
    bad = damaged_checkpoint(trained_tiny_cnn, tmp_path / "damaged" / "best.pt")
    report = tmp_path / "parity.json"
    result = vtool("parity", trained_tiny_cnn, bad, "--limit", "100", "--json", report)
    line = one_line_error(result, code=3)
    assert "parity failed" in line and "flipped classes:" in line
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["flips_per_class"]
    assert next(iter(data["flips_per_class"])) in line


@pytest.mark.parametrize("args, match", [
    (["--format", "onxx"], "Did you mean 'onnx'"),
    (["--format", "onnx", "--opset", "9"], "--opset 9 is out of range"),
    (["--format", "pt2", "--opset", "18"], "--opset applies to --format onnx only"),
    (["--format", "onnx", "--exporter", "torchscript"], "Unknown ONNX exporter"),
])
def test_export_bad_flags(args: list[str], match: str) -> None:
    assert match in one_line_error(vtool("export", "--model", "tiny-cnn", *args))


def test_export_unsupported_op_names_it(tmp_path: Path, user_file: Path) -> None:
    result = vtool("export", "--model", f"{user_file}:EigNet", "--format", "onnx", "--data", "digits",
                   "--out", tmp_path / "eig")
    assert "operator 'aten.linalg_eig'" in one_line_error(result)
    assert not (tmp_path / "eig").exists()


def test_export_verification_failure_exit_3_then_refused(tmp_path: Path, user_file: Path,
                                                         trained_tiny_cnn: Path) -> None:
    out = tmp_path / "quirk"
    result = vtool("export", "--model", f"{user_file}:BatchQuirk", "--format", "torchscript", "--data", "digits",
                   "--samples", "16", "--out", out)
    assert "does not match its reference (torch eager)" in one_line_error(result, code=3)
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    assert "status 'failed'" in one_line_error(vtool("parity", trained_tiny_cnn, out))


def test_parity_bad_artifacts(tmp_path: Path, trained_tiny_cnn: Path, exported_tiny_cnn) -> None:
    corrupt = shutil.copytree(exported_tiny_cnn("onnx"), tmp_path / "corrupt")
    (corrupt / "model.onnx").write_bytes(b"\x00garbage")
    assert "corrupt" in one_line_error(vtool("parity", trained_tiny_cnn, corrupt))
    missing = shutil.copytree(exported_tiny_cnn("onnx"), tmp_path / "missing")
    (missing / "model.onnx").unlink()
    assert "missing" in one_line_error(vtool("parity", trained_tiny_cnn, missing))
    future = shutil.copytree(exported_tiny_cnn("onnx"), tmp_path / "future")
    manifest = json.loads((future / "manifest.json").read_text())
    manifest["schema_version"] = 7
    (future / "manifest.json").write_text(json.dumps(manifest))
    assert "schema_version 7" in one_line_error(vtool("parity", trained_tiny_cnn, future))
    assert "--min-agreement" in one_line_error(vtool("parity", trained_tiny_cnn, future, "--min-agreement", "3"))
