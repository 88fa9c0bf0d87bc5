"""Nothing is overwritten without --overwrite, nothing is written into its own source, and concurrent runs on one
destination cannot mix their files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import one_line_error, one_torch_thread, run_cli  # noqa: F401

from toolchain.artifact import load_artifact, sha256_file
from toolchain.errors import UserInputError, VtoolError


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its sha256: equal snapshots mean nothing was touched."""
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def good_artifact(exported_tiny_cnn, tmp_path: Path) -> Path:
    dest = tmp_path / "exported" / "good-onnx"
    shutil.copytree(exported_tiny_cnn("onnx"), dest)
    return dest


@pytest.fixture()
def no_export_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if an exporter starts: a refused destination must be refused before any work."""
    from toolchain.export import formats

    def refuse(*args, **kwargs):
        raise AssertionError("the export ran although its destination had to be refused first")

    for name in list(formats.WRITERS):
        monkeypatch.setitem(formats.WRITERS, name, refuse)


def test_export_refuses_an_existing_artifact_without_overwrite(good_artifact: Path, trained_tiny_cnn: Path,
                                                               no_export_work) -> None:
    before = snapshot(good_artifact)
    result = run_cli("export", "--model", trained_tiny_cnn, "--format", "onnx", "--out", good_artifact, "--no-verify")
    one_line_error(result, "--overwrite")
    assert snapshot(good_artifact) == before


def test_export_library_refuses_too(good_artifact: Path, tiny_cnn_model, no_export_work) -> None:
    from toolchain.export import ExportConfig, export_model

    with pytest.raises(UserInputError, match="overwrite"):
        export_model(tiny_cnn_model, ExportConfig(format="onnx", out=good_artifact, verify=False))


def test_export_overwrite_replaces_it(good_artifact: Path, trained_tiny_cnn: Path) -> None:
    result = run_cli("export", "--model", trained_tiny_cnn, "--format", "pt2", "--out", good_artifact, "--no-verify",
                     "--overwrite")
    assert result.exit_code == 0, result.stderr
    after = load_artifact(good_artifact)
    assert after.format == "pt2" and sorted(p.name for p in good_artifact.iterdir()) == ["manifest.json", "model.pt2"]


def test_quantize_refuses_an_existing_artifact_without_overwrite(good_artifact: Path, exported_tiny_cnn) -> None:
    other = good_artifact.with_name("other-int8")
    shutil.copytree(good_artifact, other)
    before = snapshot(other)
    result = run_cli("quantize", "--model", good_artifact, "--data", "digits", "--out", other, "--no-speed",
                     "--samples", 16, "--eval-samples", 16)
    one_line_error(result, "--overwrite")
    assert snapshot(other) == before


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_quantize_never_writes_into_its_source(good_artifact: Path, overwrite: list[str]) -> None:
    before = snapshot(good_artifact)
    result = run_cli("quantize", "--model", good_artifact, "--out", good_artifact, "--data", "digits", "--no-speed",
                     "--samples", 16, "--eval-samples", 16, *overwrite)
    one_line_error(result, "source")
    assert snapshot(good_artifact) == before


def test_train_refuses_a_folder_of_other_files(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = run_cli("train", "--model", "tiny-cnn", "--data", "synthetic", "--epochs", 1, "--out", out)
    one_line_error(result, "--out")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_train_never_writes_into_the_run_it_starts_from(trained_tiny_cnn: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_tiny_cnn.parent, run)
    before = snapshot(run)
    result = run_cli("train", "--model", run, "--data", "digits", "--epochs", 1, "--out", run, "--overwrite")
    one_line_error(result, "source")
    assert snapshot(run) == before


def test_data_generate_refuses_an_existing_folder(tmp_path: Path) -> None:
    out = tmp_path / "shapes"
    first = run_cli("data", "generate", out, "--classes", 2, "--per-class", 3)
    assert first.exit_code == 0, first.stderr
    (out / "circle" / "mine.png").write_bytes((out / "circle" / "00000.png").read_bytes())
    before = snapshot(out)
    one_line_error(run_cli("data", "generate", out, "--classes", 3, "--per-class", 3), "--overwrite")
    assert snapshot(out) == before
    again = run_cli("data", "generate", out, "--classes", 3, "--per-class", 3, "--overwrite")
    assert again.exit_code == 0, again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["circle", "square", "triangle"]
    assert not (out / "circle" / "mine.png").exists()  # replaced as a whole, not mixed


def test_data_generate_onto_a_file_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("mine")
    one_line_error(run_cli("data", "generate", target, "--classes", 2, "--per-class", 3), "file")
    assert target.read_text() == "mine"


def test_data_generate_never_replaces_a_folder_of_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    one_line_error(run_cli("data", "generate", tmp_path, "--classes", 2, "--per-class", 3, "--overwrite"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_pipeline_refuses_a_folder_that_is_not_a_pipeline_run(tmp_path: Path, trained_tiny_cnn: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli("pipeline", "--model", trained_tiny_cnn, "--data", "digits", "--stages", "export",
                     "--formats", "onnx", "--quantize", "", "--out", tmp_path)
    one_line_error(result, "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------ concurrency


@contextmanager
def held_by_another_process(dest: Path) -> Iterator[int]:
    """Another process holds `dest`'s lock, as a first `vtool train --out dest` does while it works."""
    code = ("import sys; from toolchain.outputs import destination_lock\n"
            "with destination_lock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(dest)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.communicate("", timeout=60)


def test_a_second_run_on_a_destination_in_use_is_refused(tmp_path: Path, trained_tiny_cnn: Path) -> None:
    out = tmp_path / "run"
    with held_by_another_process(out) as pid:
        result = run_cli("train", "--model", "tiny-cnn", "--data", "synthetic", "--epochs", 1, "--out", out)
        assert f"pid {pid}" in one_line_error(result, "another vtool")
        export = run_cli("export", "--model", trained_tiny_cnn, "--format", "onnx", "--out", out, "--no-verify")
        one_line_error(export, "another vtool")
    assert not out.exists() and not list(tmp_path.iterdir())
    assert run_cli("train", "--model", "tiny-cnn", "--data", "synthetic", "--epochs", 1, "--out", out).exit_code == 0


def test_lock_is_exclusive_across_threads_and_released(tmp_path: Path) -> None:
    from toolchain.outputs import destination_lock

    dest = tmp_path / "art"
    outcome: list[str] = []
    with destination_lock(dest):
        def other() -> None:
            try:
                with destination_lock(dest):
                    outcome.append("got it")
            except UserInputError as exc:
                outcome.append(str(exc))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert "another vtool" in outcome[0]
    with destination_lock(dest):
        pass
    assert not [p for p in tmp_path.iterdir()], "lock file left behind"


def test_a_destination_that_appears_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    from toolchain.artifact import atomic_dir

    dest = tmp_path / "art"
    with pytest.raises(VtoolError, match="--overwrite"):
        with atomic_dir(dest, overwrite=False) as tmp:
            (tmp / "model.onnx").write_text("mine")
            dest.mkdir()  # a concurrent run finished first
            (dest / "model.onnx").write_text("theirs")
    assert (dest / "model.onnx").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_staging_names_are_unique(tmp_path: Path) -> None:
    from toolchain.artifact import atomic_dir

    dest = tmp_path / "art"
    with atomic_dir(dest, overwrite=True) as first, atomic_dir(dest, overwrite=True) as second:
        assert first != second
        (first / "a").write_text("1")
        (second / "b").write_text("2")
    assert sorted(p.name for p in dest.iterdir()) in (["a"], ["b"])  # one whole result, never a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
