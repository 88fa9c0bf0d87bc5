"""Preprocessing throughput on real photos saved as JPEGs: decode + resize + crop + normalize, per pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench_helpers import describe

from toolchain.bench.preprocessing import BUILDERS, DEFAULT_SPEC, save_photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return save_photos(tmp_path_factory.mktemp("photos"))


@pytest.mark.parametrize("pipeline", list(BUILDERS))
def test_preprocess_throughput(benchmark: Any, pipeline: str, photos: list[Path]) -> None:
    run = BUILDERS[pipeline](DEFAULT_SPEC)
    run(photos[0])
    benchmark.group = "preprocess"
    benchmark(lambda: [run(p) for p in photos])
    describe(benchmark, stage="preprocess", pipeline=pipeline, images=len(photos),
             input_size=list(DEFAULT_SPEC.input_size),
             images_per_s=round(len(photos) / benchmark.stats.stats.median, 2))
