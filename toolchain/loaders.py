"""DataLoaders that stream images: decoded batch by batch (optionally in worker processes), never a whole folder
in memory. DataBundle.loader/stream/batches build on these; distributed runs hand each rank its batches."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Iterator
from typing import Any

from toolchain.errors import UserInputError

TRIM_EVERY = 16  # batches between heap trims while streaming


def loader_options(workers: int, pin_memory: bool) -> dict[str, Any]:
    """DataLoader keywords: `workers` decoding processes (0: the calling process) and pinned host memory, which
    makes copies to a GPU fast and asynchronous (CUDA only)."""
    if workers < 0:
        raise UserInputError(f"--workers must be >= 0 (0 decodes images in the main process), got {workers}.")
    options: dict[str, Any] = {"num_workers": workers, "pin_memory": pin_memory}
    if workers:
        options["prefetch_factor"] = 2
    return options


def stream(bundle: Any, batches: list[list[int]], augment: bool = False, workers: int = 0,
           pin_memory: bool = False) -> Iterator[tuple[Any, Any]]:
    """(x, y) tensors for exactly these batches of sample indices of `bundle`, in order, each image preprocessed
    (and augmented when asked) as a DataLoader reads it; freed heap pages go back to the OS as it streams."""
    import torch

    from toolchain.data import ImageDataset
    from toolchain.preprocess import eval_transform, train_transform

    config = bundle.config
    hflip = config.hflip if config.hflip is not None else config.source != "digits"
    transform = train_transform(bundle.spec, hflip=hflip) if augment else eval_transform(bundle.spec)
    flat = [index for batch in batches for index in batch]
    positions, start = [], 0
    for batch in batches:
        positions.append(list(range(start, start + len(batch))))
        start += len(batch)
    dataset = ImageDataset(bundle.samples, flat, transform, bundle.spec)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=positions, **loader_options(workers, pin_memory))
    for number, batch in enumerate(loader, 1):
        if number % TRIM_EVERY == 0:
            trim_heap()
        yield batch


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl...): nothing to trim
        return None


def trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc's malloc_trim; a no-op elsewhere).

    Streaming thousands of decoded batches fragments glibc's heap (its mmap threshold adapts upwards, so
    batch-sized buffers land in the heap): measured on 7,000 96x96 images through two runners, the RSS peak
    wandered between 1.1 and 1.5 GB untrimmed and stayed at 0.83-0.91 GB with a trim every 16 batches."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
