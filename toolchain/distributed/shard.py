"""Sharded inference for eval and parity: each rank runs every world_size-th batch, rank 0 gathers the logits.

Batches are cut exactly where one process cuts them (Dist.shard_batches), so every image meets the model in
the same batch as in a single-process run and the gathered logits, in one-process order, give the same
counts. Only logits and labels travel between processes, never images; images are decoded batch by batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from toolchain.distributed.runtime import Dist

Batches = Iterator[tuple[np.ndarray, np.ndarray | None]]


def bundle_batches(bundle: Any, indices: Sequence[int], batch_size: int, dist: Dist,
                   workers: int = 0) -> tuple[Batches, int]:
    """This rank's batches of `indices` (sample indices of `bundle`), streamed and preprocessed for evaluation,
    and how many batches all ranks run together."""
    from toolchain.loaders import stream

    total = (len(indices) + batch_size - 1) // batch_size
    mine = dist.shard_batches(indices, batch_size)

    def generate() -> Batches:
        for x, y in stream(bundle, mine, workers=workers):
            yield x.numpy().astype(np.float32, copy=False), y.numpy()

    return generate(), total


def array_batches(x: np.ndarray, labels: np.ndarray | None, batch_size: int, dist: Dist) -> tuple[Batches, int]:
    """This rank's batches of images already in memory (e.g. the bundled photo crops)."""
    total = (len(x) + batch_size - 1) // batch_size
    mine = dist.shard_batches(range(len(x)), batch_size)

    def generate() -> Batches:
        for positions in mine:
            yield x[positions], None if labels is None else labels[positions]

    return generate(), total


def infer_shards(runners: Sequence[Any], batches: Batches, total: int, dist: Dist,
                 num_classes: int) -> tuple[list[np.ndarray], np.ndarray | None] | None:
    """Run this rank's batches through every runner; on rank 0 return each runner's logits for ALL batches (in
    one-process order) and the labels (None when unlabeled); None on the other ranks."""
    mine = [([runner.infer(x) for runner in runners], y) for x, y in batches]
    parts = dist.gather(mine)
    if not dist.is_main:
        return None
    ordered = dist.unshard(parts, total)
    if not ordered:
        return [np.zeros((0, num_classes), dtype=np.float32) for _ in runners], None
    logits = [np.concatenate([batch[0][i] for batch in ordered]) for i in range(len(runners))]
    labels = None if ordered[0][1] is None else np.concatenate([batch[1] for batch in ordered])
    return logits, labels
