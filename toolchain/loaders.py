"""DataLoaders that stream images: decoded batch by batch (optionally in worker processes), never a whole folder
in memory. DataBundle.loader/stream/batches build on these; distributed runs hand each rank its batches."""

from __future__ import annotations

from typing import Any

from toolchain.errors import UserInputError


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
           pin_memory: bool = False) -> Any:
    """A DataLoader yielding (x, y) tensors for exactly these batches of sample indices of `bundle`, in order,
    each image preprocessed (and augmented when asked) as it is read."""
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
    return torch.utils.data.DataLoader(dataset, batch_sampler=positions, **loader_options(workers, pin_memory))
