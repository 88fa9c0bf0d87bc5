"""Preprocessing throughput on real photos saved as JPEGs: decode + resize + crop + normalize, per pipeline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from bench_helpers import describe

from toolchain.bench.preprocessing import BUILDERS, DEFAULT_SPEC, save_photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return save_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture()
def torch_threads() -> Any:
    """One torch thread, as in a DataLoader worker (VTOOL_PREPROCESS_THREADS to change it)."""
    import torch

    before = torch.get_num_threads()
    threads = int(os.environ.get("VTOOL_PREPROCESS_THREADS", "1"))
    torch.set_num_threads(threads)
    yield threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("pipeline", list(BUILDERS))
def test_preprocess_throughput(benchmark: Any, pipeline: str, photos: list[Path], torch_threads: int) -> None:
    run = BUILDERS[pipeline](DEFAULT_SPEC)
    run(photos[0])
    benchmark.group = "preprocess"
    benchmark(lambda: [run(p) for p in photos])
    describe(benchmark, stage="preprocess", pipeline=pipeline, images=len(photos), threads=torch_threads,
             input_size=list(DEFAULT_SPEC.input_size),
             images_per_s=round(len(photos) / benchmark.stats.stats.median, 2))
