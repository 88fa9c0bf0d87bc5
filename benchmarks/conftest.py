"""pytest-benchmark suites: `pytest --benchmark-only` (from the repo root) runs them; plain `pytest` never does.

Plain `pytest` collects tests/ and benchmarks/ (pyproject testpaths) and deselects everything here
unless benchmarking was asked for (--benchmark-only or --benchmark-enable) or benchmarks/ was named
on the command line. Models are tiny by default; VTOOL_BENCH_MODEL=resnet18 for the heavy run,
VTOOL_BENCH_BATCHES=1,8,32 for other batch sizes. The peers suite (test_peers.py, marker `peers`) runs
only when named: `pytest --benchmark-only -k peers` or `pytest benchmarks/test_peers.py --benchmark-only`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_helpers import bench_batch_sizes, bench_model_name

HERE = Path(__file__).resolve().parent


def _benchmarks_requested(config: pytest.Config) -> bool:
    if config.getoption("benchmark_only", False) or config.getoption("benchmark_enable", False):
        return True
    return config.args_source != pytest.Config.ArgsSource.TESTPATHS  # e.g. `pytest benchmarks/`


def _deselect(config: pytest.Config, items: list[pytest.Item], drop: list[pytest.Item]) -> None:
    if drop:
        config.hook.pytest_deselected(items=drop)
        dropped = set(map(id, drop))
        items[:] = [item for item in items if id(item) not in dropped]


def _peers_requested(config: pytest.Config) -> bool:
    """The peers suite (an hour of quantizing real models) runs only when asked for by name."""
    return "peers" in (config.getoption("keyword", "") or "") or any("test_peers" in str(a) for a in config.args)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _peers_requested(config):
        _deselect(config, items, [item for item in items if item.get_closest_marker("peers")])
    if config.getoption("benchmark_only", False):  # deselect (not skip) the ordinary tests: a quieter summary
        _deselect(config, items, [i for i in items if "benchmark" not in getattr(i, "fixturenames", ())])
        return
    if _benchmarks_requested(config):
        return
    _deselect(config, items, [item for item in items if HERE in Path(str(item.path)).resolve().parents])


@pytest.fixture(scope="session")
def model_name() -> str:
    return bench_model_name()


@pytest.fixture(scope="session")
def torch_model(model_name: str) -> Any:
    from toolchain.sources import load_model

    return load_model(model_name)


@pytest.fixture(scope="session")
def artifact_factory(torch_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """format -> artifact dir of the bench model, exported once per session (verification off: speed only)."""
    from toolchain.export import ExportConfig, export_model

    cache: dict[str, Path] = {}

    def make(fmt: str) -> Path:
        if fmt not in cache:
            out = tmp_path_factory.mktemp(f"bench-{fmt}") / f"{bench_model_name()}-{fmt}"
            cache[fmt] = export_model(torch_model, ExportConfig(format=fmt, out=out, verify=False)).path
        return cache[fmt]

    return make


@pytest.fixture(scope="session")
def image_pool(torch_model: Any) -> np.ndarray:
    """Real preprocessed images for the bench model (bundled photos or its data), as vtool bench uses."""
    from toolchain.bench.inputs import bench_inputs

    pool, _ = bench_inputs(torch_model, max(bench_batch_sizes()))
    return pool
