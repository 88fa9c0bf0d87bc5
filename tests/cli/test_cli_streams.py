"""Output streams: results on stdout, logs/warnings/progress on stderr; `--json -` is one valid JSON document on
stdout; --quiet; wide tables when piped; a schema id in every --json; `vtool models` builds no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
BENCH = ("bench", "tiny-cnn", "--backend", "torch", "--iterations", "3", "--warmup", "0", "--warmup-iterations", "1")


def _vtool(*args: str, stderr: int | None = subprocess.PIPE) -> subprocess.CompletedProcess:
    """vtool in a subprocess, its stdout a pipe (not a terminal) and no COLUMNS set: what a script sees."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "toolchain.cli", *args], stdout=subprocess.PIPE, stderr=stderr,
                          text=True, env=env, timeout=300, check=False)


def test_bench_with_stderr_thrown_away_prints_only_results() -> None:
    """`vtool bench ... 2>/dev/null | cat`: the table, no log or progress lines."""
    proc = _vtool(*BENCH, stderr=subprocess.DEVNULL)
    assert proc.returncode == 0
    out = proc.stdout
    assert "vtool bench" in out and "tiny-cnn" in out and "torch" in out
    for noise in ("INFO", "WARNING", "benchmarking", "wrote", "measuring"):
        assert noise not in out, (noise, out)
    assert max(len(line) for line in out.splitlines()) > 80  # piped: the wide table is not cut to 80 columns
    assert "…" not in out


def test_json_dash_is_one_valid_document_on_stdout() -> None:
    result = run_cli(*BENCH, "--json", "-")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)  # nothing but the document on stdout
    assert data["schema"] == "vtool.bench/1" and data["entries"][0]["runner"] == "torch"
    assert data["entries"][0]["compile_s"] is None
    assert "vtool bench" in result.stderr  # the table moved to stderr
    assert not Path("-").exists()


def test_quiet_prints_results_only(tmp_path: Path) -> None:
    quiet = run_cli(*BENCH, "--quiet", "--json", tmp_path / "b.json")
    assert quiet.exit_code == 0 and "vtool bench" in quiet.stdout
    assert "INFO" not in quiet.stderr and "wrote" not in quiet.stderr
    assert json.loads((tmp_path / "b.json").read_text())["schema"] == "vtool.bench/1"
    also = run_cli("-q", "models")  # before the command name too
    assert also.exit_code == 0 and "tiny-cnn" in also.stdout and also.stderr == ""


@pytest.mark.parametrize("command", [
    ("eval", "--model", "tiny-cnn", "--data", "digits", "--split", "val"),
    ("models",),
])
def test_every_json_has_a_schema_id(command: tuple[str, ...]) -> None:
    result = run_cli(*command, "--json", "-")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["schema"] == f"vtool.{command[0]}/1"


def test_models_lists_the_registry_without_building_a_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from toolchain.models import registry

    def boom(**_: object) -> None:
        raise AssertionError("vtool models built a network")

    for name, entry in list(registry._REGISTRY.items()):
        monkeypatch.setitem(registry._REGISTRY, name, dataclasses.replace(entry, factory=boom))
    result = run_cli("models", "--json", "-")
    assert result.exit_code == 0, result.stderr
    listed = {m["name"]: m["params"] for m in json.loads(result.stdout)["models"]}
    assert listed["resnet18"] == 11_689_512 and all(listed.values())


@pytest.mark.parametrize("name", ["tiny-cnn", "tiny-resnet", "tiny-vit", "simple-cnn"])
def test_static_parameter_counts_match_the_built_model(name: str) -> None:
    from toolchain.models import count_parameters, create_model, get_entry

    assert get_entry(name).params == count_parameters(create_model(name, pretrained=False)[0])


@pytest.mark.slow
def test_every_static_parameter_count_matches_the_built_model() -> None:
    from toolchain.models import count_parameters, create_model, list_models

    for entry in list_models():
        assert entry.params == count_parameters(create_model(entry.name, pretrained=False)[0]), entry.name
