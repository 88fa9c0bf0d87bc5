"""Data-parallel training (DDP) pieces shared by train() and QAT fine-tuning (quantize/pt2e.py).

One rule makes N processes train like one: `--batch-size` is the GLOBAL batch. Each of N ranks takes
batch_size // N images per step from its DistributedSampler share (one permutation per epoch, seeded
by the run's seed, so the ranks never overlap), DDP averages the gradients, and the learning-rate
schedule sees the same number of steps per epoch as one process would. Evaluation splits are sharded
batch by batch (Dist.shard_batches) and their loss/correct/count sums reduced across ranks, so a
metric over N ranks is the metric one process computes on the same images.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

from toolchain.distributed.runtime import Dist, WorkerDone, current
from toolchain.errors import UserInputError
from toolchain.loaders import stream

log = logging.getLogger(__name__)


def per_rank_batch(batch_size: int, dist: Dist) -> int:
    """Images per step on each rank: the global batch split evenly (a remainder is dropped, with a warning)."""
    if not dist.distributed:
        return batch_size
    if batch_size < dist.world_size:
        raise UserInputError(f"--batch-size {batch_size} is the global batch and cannot be split over "
                             f"{dist.world_size} processes; use at least {dist.world_size} (e.g. "
                             f"{dist.world_size * 32}).")
    share = batch_size // dist.world_size
    if share * dist.world_size != batch_size and dist.is_main:
        log.warning("--batch-size %d does not split evenly over %d processes: each takes %d (global batch %d)",
                    batch_size, dist.world_size, share, share * dist.world_size)
    return share


def steps_per_epoch(count: int, batch_size: int, dist: Dist) -> int:
    """Optimizer steps in one epoch (equal on every rank: the sampler pads the shares to the same length)."""
    return math.ceil(math.ceil(count / dist.world_size) / per_rank_batch(batch_size, dist))


def train_batches(bundle: Any, cache: tuple[Any, Any] | None, batch_size: int, augment_on: bool, dist: Dist,
                  seed: int, epoch: int, workers: int = 0, pin_memory: bool = False) -> Iterator[tuple[Any, Any]]:
    """This rank's (x, y) batches for one epoch: cached tensors augmented a batch at a time, or images decoded
    and augmented one by one in DataLoader workers when the split is too large to cache."""
    import torch

    from toolchain.train import augment

    spec = bundle.spec
    hflip = bundle.config.hflip if bundle.config.hflip is not None else bundle.config.source != "digits"
    count = len(bundle.split["train"])
    if dist.distributed:
        share = per_rank_batch(batch_size, dist)
        order = dist.epoch_indices(count, seed, epoch)
        chunks = [order[i:i + share] for i in range(0, len(order), share)]
    elif cache is None:
        yield from bundle.loader("train", batch_size=batch_size, shuffle=True, augment=augment_on, seed=seed + epoch,
                                 workers=workers, pin_memory=pin_memory)
        return
    else:  # one process keeps its historical order: torch's global generator, seeded per epoch by the loop
        order = torch.randperm(count).tolist()
        chunks = [order[i:i + batch_size] for i in range(0, count, batch_size)]
    if cache is None:
        train_indices = bundle.split["train"]
        yield from stream(bundle, [[train_indices[i] for i in chunk] for chunk in chunks], augment=augment_on,
                          workers=workers, pin_memory=pin_memory)
        return
    x_all, y_all = cache
    for chunk in chunks:
        index = torch.tensor(chunk)
        x = x_all[index]
        yield (augment.augment_batch(x, spec.mean, spec.std, hflip) if augment_on else x), y_all[index]


def eval_batches(bundle: Any, part: str, cache: tuple[Any, Any] | None, batch_size: int, dist: Dist,
                 workers: int = 0, pin_memory: bool = False) -> Iterator[tuple[Any, Any]]:
    """This rank's batches of a split, cut where one process would cut them (Dist.shard_batches)."""
    import torch

    indices = bundle.split.get(part, [])
    positions = dist.shard_batches(range(len(indices)), batch_size)
    if cache is not None:
        for batch in positions:
            index = torch.tensor(batch)
            yield cache[0][index], cache[1][index]
        return
    yield from stream(bundle, [[indices[i] for i in batch] for batch in positions], workers=workers,
                      pin_memory=pin_memory)


def reduced_loss(module: Any, batches: Any, criterion: Any, device: str, dist: Dist) -> tuple[float, float, int]:
    """Mean loss, accuracy and image count of `module` over every rank's batches (sums all-reduced)."""
    import torch

    module.eval()
    loss_sum, correct, count = 0.0, 0, 0
    with torch.inference_mode():
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = module(x).float()
            loss_sum += float(criterion(logits, y)) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
    loss_sum, correct, count = dist.all_reduce_sum([loss_sum, correct, count])
    if count == 0:
        return float("nan"), float("nan"), 0
    return loss_sum / count, correct / count, int(count)


def cache_limit(limit_bytes: int, dist: Dist) -> int:
    """Every rank on a node caches the whole split: the node's cache budget is shared between them."""
    return max(1, limit_bytes // dist.local_world_size)


# ------------------------------------------------------------------ QAT (toolchain/quantize/pt2e.py::qat)


def qat_wrap(prepared: Any) -> tuple[Any, Dist]:
    """The QAT graph in DDP when this process is a torchrun worker (gloo: QAT trains on the CPU), else as is."""
    dist = current("cpu")
    return dist.wrap(prepared), dist


def qat_batches(bundle: Any, batch_size: int, seed: int, epoch: int, augment_on: bool,
                dist: Dist) -> Iterator[tuple[Any, Any]]:
    """One QAT epoch of this rank's batches (one process: the historical shuffled DataLoader)."""
    if not dist.distributed:
        yield from bundle.loader("train", batch_size=batch_size, shuffle=True, augment=augment_on, seed=seed + epoch)
        return
    train_indices = bundle.split["train"]
    share = per_rank_batch(batch_size, dist)
    order = dist.epoch_indices(len(train_indices), seed, epoch)
    chunks = [[train_indices[i] for i in order[j:j + share]] for j in range(0, len(order), share)]
    yield from stream(bundle, chunks, augment=augment_on)


def qat_finish(dist: Dist) -> None:
    """After the last QAT epoch only rank 0 goes on (convert, export, judge, write the artifact): the other
    ranks stop here with WorkerDone (exit code 0 in the CLI)."""
    if dist.distributed and not dist.is_main:
        raise WorkerDone(f"rank {dist.rank} finished its share of QAT; rank 0 writes the artifact.")
