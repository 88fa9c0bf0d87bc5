"""Shared and deprecated flags: --split everywhere (parity's --part still works), --engine for quantize
(--backend still works), help pages, and train's documented defaults matching TrainConfig."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import one_line_error, run_cli

from toolchain.cli import COMMANDS


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "data"] + ["data generate"])
def test_every_command_has_a_help_page(command: str) -> None:
    result = run_cli(*command.split(), "--help")
    assert result.exit_code == 0 and "Usage:" in result.stdout


def test_deprecated_flags_are_hidden() -> None:
    assert "--part" not in run_cli("parity", "--help").stdout and "--split" in run_cli("parity", "--help").stdout
    quantize_help = run_cli("quantize", "--help").stdout
    assert "--engine" in quantize_help and "--backend" not in quantize_help


def test_quantize_backend_is_an_alias_of_engine() -> None:
    # Both flags reach QuantConfig.engine: the same validation answers for either.
    for flag in ("--engine", "--backend"):
        one_line_error(run_cli("quantize", "--model", "tiny-cnn", flag, "tensorrt"), "Unknown quantization engine")


def test_parity_part_is_an_alias_of_split(tiny_cnn_model, exported_tiny_cnn, trained_tiny_cnn: Path,
                                          tmp_path: Path) -> None:
    onnx = exported_tiny_cnn("onnx")
    for flag in ("--split", "--part"):
        report = tmp_path / f"{flag[2:]}.json"
        result = run_cli("parity", trained_tiny_cnn, onnx, flag, "test", "--no-record", "--json", report)
        assert result.exit_code == 0, result.stdout + result.stderr
        assert json.loads(report.read_text())["data"]["part"] == "test"
    assert "--part is deprecated" in result.stderr  # logged (on stderr) by the last, deprecated call
    assert "deprecated" not in result.stdout
    one_line_error(run_cli("parity", trained_tiny_cnn, onnx, "--split", "dev"), "Unknown split 'dev'")


def test_train_help_states_the_train_config_defaults() -> None:
    """The train flags default to None (only what was given overrides TrainConfig or a resumed run's config);
    the defaults their help states must be TrainConfig's."""
    import typer

    from toolchain.cli import app
    from toolchain.train import TrainConfig

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    checked = 0
    for param in command.params:
        match = re.search(r"\(default: ([^)]+)\)", getattr(param, "help", "") or "")
        if param.name in TrainConfig.__dataclass_fields__ and match:
            default = TrainConfig.__dataclass_fields__[param.name].default
            stated = {"off": None, "on": True}.get(match.group(1), match.group(1))
            assert stated == default or str(default) == stated, (param.name, stated, default)
            checked += 1
    assert checked >= 12
