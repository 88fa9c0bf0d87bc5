"""The README's Python API block runs as written, in a fresh directory, with its heavy knobs turned down."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from helpers import one_torch_thread  # noqa: F401

README = Path(__file__).resolve().parents[1] / "README.md"
# (README text, what the test runs instead): fewer epochs, shorter measurements, a one-format pipeline
QUICKER = [
    ("TrainConfig(epochs=15)", "TrainConfig(epochs=4)"),
    ("batch_sizes=[1, 32])", "batch_sizes=[1], iterations=3)"),
    ('PipelineConfig(model="simple-cnn", data="digits")',
     'PipelineConfig(model="tiny-cnn", data="digits", epochs=1, formats=["onnx"], quantize=[], batch_sizes=[1], '
     'bench_seconds=0.05)'),
]


def readme_api_block() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README.md has no ```python block under '## Python API'"
    return blocks[0]


def test_readme_python_api_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = readme_api_block()
    for old, new in QUICKER:
        assert old in code, f"the README block no longer contains {old!r}: update QUICKER"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the README's own example
    assert scope["run"].best_path.is_file() and scope["scores"].n > 0
    assert scope["onnx"] and scope["int8"] and scope["parity"]
    assert {e.runner for e in scope["bench"].entries} == {"torch", "onnxruntime"}
    assert scope["report"] and (Path(scope["report"].files["html"])).is_file()
    assert sorted(os.listdir(tmp_path)) == ["exported", "runs"]
