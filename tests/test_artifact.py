"""Artifact directories: the model file is confined to its directory and checked against the sha256 its manifest
recorded; files get the permissions of the user's umask; stale staging left by a killed run is swept."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
from helpers import one_line_error, one_torch_thread, run_cli  # noqa: F401
from PIL import Image

from toolchain.artifact import Manifest, atomic_dir, atomic_write_text, load_artifact, sha256_file, write_artifact
from toolchain.errors import ArtifactError


@pytest.fixture()
def artifact(exported_tiny_cnn, tmp_path: Path) -> Path:
    dest = tmp_path / "art"
    shutil.copytree(exported_tiny_cnn("onnx"), dest)
    return dest


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "x.png"
    Image.new("RGB", (32, 32), (10, 200, 10)).save(path)
    return path


def edit_manifest(folder: Path, **changes: object) -> None:
    data = json.loads((folder / "manifest.json").read_text())
    data.update(changes)
    (folder / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize("model_file", ["../../../etc/passwd", "/etc/passwd", "../outside.onnx", "sub/../../x.onnx"])
def test_model_file_must_stay_inside_the_artifact(artifact: Path, image: Path, model_file: str) -> None:
    shutil.copy(artifact / "model.onnx", artifact.parent / "outside.onnx")
    edit_manifest(artifact, model_file=model_file)
    with pytest.raises(ArtifactError, match="inside"):
        load_artifact(artifact)
    one_line_error(run_cli("predict", artifact, "--image", image), "model_file")


def test_a_symlink_out_of_the_artifact_is_refused(artifact: Path, image: Path) -> None:
    outside = artifact.parent / "elsewhere.onnx"
    shutil.move(artifact / "model.onnx", outside)
    (artifact / "model.onnx").symlink_to(outside)
    with pytest.raises(ArtifactError, match="inside"):
        load_artifact(artifact)


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript"])
def test_export_records_the_model_sha256(exported_tiny_cnn, fmt: str) -> None:
    art = load_artifact(exported_tiny_cnn(fmt))
    assert art.manifest.files[art.manifest.model_file] == sha256_file(art.model_path)


def test_write_artifact_records_every_file(tmp_path: Path) -> None:
    def write(path: Path) -> None:
        path.write_bytes(b"onnx bytes")
        path.with_name("model.onnx.data").write_bytes(b"weights")

    manifest = Manifest(format="onnx", model_file="model.onnx", spec={"architecture": "t", "num_classes": 2})
    art = write_artifact(tmp_path / "a", manifest, write)
    assert set(art.manifest.files) == {"model.onnx", "model.onnx.data"}
    (tmp_path / "a" / "model.onnx.data").write_bytes(b"swapped")
    with pytest.raises(ArtifactError, match="model.onnx.data"):
        load_artifact(tmp_path / "a")


def test_a_swapped_model_file_is_caught(artifact: Path, image: Path) -> None:
    with open(artifact / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(artifact)
    one_line_error(run_cli("predict", artifact, "--image", image), "sha256")


def test_old_manifest_without_hashes_loads_with_a_warning(artifact: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = json.loads((artifact / "manifest.json").read_text())
    data.pop("files", None)
    (artifact / "manifest.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="toolchain"):
        assert load_artifact(artifact).format == "onnx"
    assert "sha256" in caplog.text


@pytest.fixture()
def umask():
    """Set a umask for one test (restored after)."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "dirs", "files"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_permissions_follow_the_umask(umask, tiny_cnn_model, tmp_path: Path, mask: int, dirs: int,
                                      files: int) -> None:
    from toolchain.export import ExportConfig, export_model
    from toolchain.models.checkpoint import save_checkpoint

    umask(mask)
    art = export_model(tiny_cnn_model, ExportConfig(format="torchscript", out=tmp_path / "art", verify=False)).path
    assert mode(art) == dirs
    assert {p.name: mode(p) for p in art.iterdir()} == {p.name: files for p in art.iterdir()}
    atomic_write_text(tmp_path / "result.json", "{}")
    assert mode(tmp_path / "result.json") == files
    save_checkpoint(tmp_path / "run" / "best.pt", tiny_cnn_model.module, tiny_cnn_model.spec)
    assert mode(tmp_path / "run" / "best.pt") == files


def test_train_run_files_follow_the_umask(umask, tmp_path: Path) -> None:
    umask(0o022)
    result = run_cli("train", "--model", "tiny-cnn", "--data", "synthetic", "--epochs", 1, "--out", tmp_path / "run",
                     "--json", tmp_path / "t.json")
    assert result.exit_code == 0, result.stderr
    assert mode(tmp_path / "run") == 0o755
    assert {p.name: mode(p) for p in (tmp_path / "run").iterdir()} == {
        p.name: 0o644 for p in (tmp_path / "run").iterdir()}
    assert mode(tmp_path / "t.json") == 0o644


def test_stale_staging_is_swept_on_the_next_write(tmp_path: Path) -> None:
    from toolchain.outputs import destination_lock

    stale = [tmp_path / ".a.tmp-x1", tmp_path / ".a.old-123", tmp_path / ".b.build-y2", tmp_path / ".r.json.tmp-abc"]
    fresh = tmp_path / ".c.tmp-z3"
    busy = tmp_path / ".d.tmp-q4"  # old, but its destination is locked by a live run
    for path in [*stale[:3], fresh, busy]:
        path.mkdir()
        (path / "model.onnx").write_text("half")
    stale[3].write_text("{")
    (tmp_path / "mine.txt").write_text("not vtool's")
    hours_ago = time.time() - 3 * 3600
    for path in [*stale, busy, tmp_path / "mine.txt"]:
        os.utime(path, (hours_ago, hours_ago))
    with destination_lock(tmp_path / "d"):
        with atomic_dir(tmp_path / "new", overwrite=False) as tmp:
            (tmp / "f").write_text("x")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([".c.tmp-z3", ".d.tmp-q4", "mine.txt", "new"])


def test_scratch_dirs_a_killed_run_left_in_the_temp_dir_are_swept(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    scratch = tmp_path / "systmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    old, fresh, other = scratch / ".vtool-quant-a1", scratch / ".vtool-quant-b2", scratch / "someone-else"
    for path in (old, fresh, other):
        path.mkdir()
    two_days_ago = time.time() - 2 * 86400
    for path in (old, other):
        os.utime(path, (two_days_ago, two_days_ago))
    with atomic_dir(tmp_path / "art") as tmp:
        (tmp / "f").write_text("x")
    assert sorted(p.name for p in scratch.iterdir()) == [".vtool-quant-b2", "someone-else"]
