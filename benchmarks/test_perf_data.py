"""Data pipeline throughput: an ImageFolder streamed through DataLoader workers (decode PNG + resize + normalize,
optionally the training augmentation), as `vtool train/eval/parity --workers N` read large folders.

One pass over the folder per round, workers started per pass (as one epoch does). images_per_s is in
extra_info; VTOOL_DATA_BENCH_IMAGES / VTOOL_DATA_BENCH_SIZE change the folder (default 512 PNGs of 64x64
read at 96x96).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from bench_helpers import describe

from toolchain.data import DataConfig, generate_synthetic, load_data
from toolchain.loaders import stream
from toolchain.spec import ModelSpec

IMAGES = int(os.environ.get("VTOOL_DATA_BENCH_IMAGES", "512"))
SIZE = int(os.environ.get("VTOOL_DATA_BENCH_SIZE", "64"))
INPUT = 96
BATCH = 64


@pytest.fixture(scope="module")
def folder_bundle(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = generate_synthetic(tmp_path_factory.mktemp("folder") / "shapes", classes=4, per_class=IMAGES // 4,
                              size=SIZE, seed=0)
    spec = ModelSpec(architecture="data-bench", num_classes=4, input_size=(INPUT, INPUT))
    return load_data(spec, DataConfig(source=str(root), val_fraction=0.0, test_fraction=0.0))


@pytest.fixture()
def one_thread() -> Any:
    """One intra-op thread in the reading process, as DataLoader workers use: on a shared 2-core machine more
    threads make the per-image ops wait on OpenMP spinning (measured under load: 11 vs 176 images/s with
    augmentation, no workers)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("augment", [False, True], ids=["eval", "train-augment"])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_folder_stream_throughput(benchmark: Any, folder_bundle: Any, workers: int, augment: bool,
                                  one_thread: None) -> None:
    indices = folder_bundle.split["train"]
    batches = [indices[i:i + BATCH] for i in range(0, len(indices), BATCH)]

    def one_pass() -> int:
        return sum(len(y) for _, y in stream(folder_bundle, batches, augment=augment, workers=workers))

    assert one_pass() == len(indices)
    benchmark.group = "data-pipeline"
    benchmark.pedantic(one_pass, rounds=3, iterations=1)
    describe(benchmark, stage="data", workers=workers, augment=augment, images=len(indices), image_size=SIZE,
             input_size=INPUT, batch_size=BATCH, cpu_count=os.cpu_count(),
             images_per_s=round(len(indices) / benchmark.stats.stats.median, 1))


def test_folder_index_cost(benchmark: Any, folder_bundle: Any) -> None:
    """Listing + verifying + hashing the folder, which every rank does once before training."""
    root = Path(folder_bundle.samples.source)
    spec = folder_bundle.spec
    benchmark.group = "data-index"
    benchmark.pedantic(lambda: load_data(spec, DataConfig(source=str(root))), rounds=3, iterations=1)
    describe(benchmark, stage="data-index", images=len(folder_bundle.samples),
             images_per_s=round(len(folder_bundle.samples) / benchmark.stats.stats.median, 1))
