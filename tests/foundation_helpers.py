"""Helpers for the foundation tests (train / eval / predict / data / models): CLI calls and small datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from toolchain.data import generate_synthetic


def cli(*args: Any, env: dict[str, str] | None = None) -> Any:
    """Invoke `vtool ARGS...` in-process; result has exit_code, stdout, stderr."""
    from toolchain.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})


def assert_one_line_error(result: Any, match: str, code: int = 1) -> str:
    """Exit code `code`, exactly one `error: ...` line on stderr mentioning `match`, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert match.lower() in errors[0].lower(), errors[0]
    assert "Traceback" not in result.stderr + result.stdout
    return errors[0]


def image_folder(root: Path, classes: int = 3, per_class: int = 6, size: int = 32) -> Path:
    """A small real ImageFolder (PNG shapes, one sub-folder per class)."""
    return generate_synthetic(root, classes=classes, per_class=per_class, size=size, seed=0)


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


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The test machine's 2 cores are shared: one intra-op thread avoids OpenMP spin contention."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
