"""Helpers shared by the tests (tests/ is on sys.path through tests/conftest.py): the one way to run the CLI,
its one-line-error contract, small datasets and user model files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from toolchain.data import generate_synthetic


def run_cli(*args: Any, env: dict[str, str] | None = None) -> Any:
    """Invoke `vtool ARGS...` in-process; the result has exit_code, stdout, stderr (unexpected exceptions
    propagate, so a crash shows its traceback instead of a bare exit code)."""
    from typer.testing import CliRunner

    from toolchain.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def one_line_error(result: Any, match: str = "", code: int = 1) -> str:
    """Exit code `code` and exactly one `error: ...` line, the last on stderr, mentioning `match`; no traceback.
    (Log lines that came before it are on stderr too: stdout carries results only.)"""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert match.lower() in errors[0].lower(), errors[0]
    assert "Traceback" not in result.stdout + result.stderr and "error:" not in result.stdout
    return errors[0]


def write_model_file(artifact_dir: Path, data: bytes) -> Path:
    """Replace an artifact's model file and re-record its sha256: a file that was already broken when written
    (what a runner must refuse to load), not one changed afterwards (what the manifest hash catches)."""
    import json

    from toolchain.artifact import sha256_file

    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    model = artifact_dir / manifest["model_file"]
    model.write_bytes(data)
    manifest["files"][manifest["model_file"]] = sha256_file(model)
    (artifact_dir / "manifest.json").write_text(json.dumps(manifest))
    return model


def image_folder(root: Path, classes: int = 3, per_class: int = 6, size: int = 32) -> Path:
    """A small real ImageFolder (PNG shapes, one sub-folder per class)."""
    return generate_synthetic(root, classes=classes, per_class=per_class, size=size, seed=0)


def damaged_checkpoint(source: Path, dest: Path, scale: float = 0.8, seed: int = 0) -> Path:
    """A copy of a checkpoint with seeded noise added to every weight: a candidate that must fail parity."""
    import torch

    from toolchain.models.checkpoint import read_checkpoint, save_checkpoint
    from toolchain.sources import load_model

    payload = read_checkpoint(source)
    model = load_model(str(source))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * param.std() * scale)
    extra = {k: v for k, v in payload.items() if k not in ("format", "version", "spec", "state_dict")}
    return save_checkpoint(dest, model.module, model.spec, **extra)


TINY_USER_MODEL = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.fc = nn.Linear(4 * 16, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))
'''

UNSUPPORTED = '''
import torch
from torch import nn

class EigNet(nn.Module):
    """Uses torch.linalg.eigvals, which has no ONNX implementation."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.head = nn.Linear(3, num_classes)

    def forward(self, x):
        values = torch.linalg.eigvals(x[:, 0, :3, :3])
        return self.head(values.real)


class BatchQuirk(nn.Module):
    """Answers differently at batch 2 (the trace example) than at any other batch: a trace bakes the branch."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.head = nn.Linear(3 * 32 * 32, num_classes)

    def forward(self, x):
        logits = self.head(x.flatten(1))
        if x.shape[0] == 2:
            return logits
        return -logits
'''


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The test machine's 2 cores are shared: one intra-op thread avoids OpenMP spin contention."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
