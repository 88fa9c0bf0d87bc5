"""The worker side of a distributed run: the process group, the collectives vtool needs, DDP and sharding.

`current()` returns the Dist of this process: a single-process one (rank 0 of 1, every collective a
no-op) outside torchrun, else one bound to a process group it initialises on first use (gloo on CPU,
nccl on CUDA) and destroys at exit. Collective failures (a peer that died, a timeout) become one-line
DistributedErrors, so a worker never prints a gloo traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from toolchain.distributed import config as env
from toolchain.errors import VtoolError, first_line

log = logging.getLogger(__name__)


class DistributedError(VtoolError):
    """A collective failed: a peer process stopped or stopped answering (`peer_lost` then)."""

    def __init__(self, message: str, peer_lost: bool = True) -> None:
        super().__init__(message)
        self.peer_lost = peer_lost


class WorkerDone(VtoolError):
    """Raised on ranks other than 0 when only rank 0 goes on (e.g. after QAT): not a failure, exit code 0."""

    exit_code = 0


@dataclass
class Dist:
    """This process's place in the job and the collectives between the processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str = ""
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # collectives ----------------------------------------------------------
    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over all ranks (float64 on the wire: counts stay exact up to 2**53)."""
        if not self.distributed:
            return [float(v) for v in values]
        import torch

        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._wire())
        self._call("all_reduce", tensor)
        return [float(v) for v in tensor.cpu()]

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """`obj` from rank `src` on every rank (pickled: keep it small)."""
        if not self.distributed:
            return obj
        box = [obj if self.rank == src else None]
        self._call("broadcast_object_list", box, src=src)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` in rank order on rank 0 (None elsewhere)."""
        if not self.distributed:
            return [obj]
        box: list[Any] | None = [None] * self.world_size if self.is_main else None
        self._call("gather_object", obj, box, dst=0)  # nccl: current() already set this rank's CUDA device
        return box

    def barrier(self) -> None:
        if self.distributed:
            self._call("barrier")

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn a collective that failed inside torch (DDP's gradient all-reduce in backward(), a gloo/nccl
        read error) into a one-line DistributedError marked peer_lost: the root cause is another rank."""
        try:
            yield
        except RuntimeError as exc:
            if not self.distributed or not any(word in str(exc) for word in _PEER_WORDS):
                raise
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: lost contact with another worker "
                f"({first_line(exc, 100, first_only=True)}); the failing rank's own error says why."
            ) from None

    def _wire(self) -> str:
        return f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        import torch.distributed as dist

        try:
            return getattr(dist, name)(*args, **kwargs)
        except (RuntimeError, dist.DistError) as exc:
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: another worker stopped or stopped answering during "
                f"{name} ({first_line(exc, 120, first_only=True)}); the failing rank's own error says why."
            ) from None

    # models and data ------------------------------------------------------
    def wrap(self, module: Any, sync_bn: bool = False) -> Any:
        """DistributedDataParallel around `module` (already on self.device); the module itself when alone.

        DDP copies rank 0's weights and buffers to every rank here, so all ranks start identical."""
        if not self.distributed:
            return module
        import torch

        if sync_bn:
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        device_ids = [self.local_rank] if self.device.startswith("cuda") else None
        try:
            return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
        except (RuntimeError, torch.distributed.DistError) as exc:
            raise DistributedError(f"rank {self.rank}: could not start DistributedDataParallel "
                                   f"({first_line(exc, 160, first_only=True)}).") from None

    def epoch_indices(self, count: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
        """This rank's share of `count` training items for one epoch (DistributedSampler: one permutation per
        epoch shared by all ranks, padded so every rank takes the same number of steps)."""
        if not self.distributed:
            import torch

            return torch.randperm(count).tolist() if shuffle else list(range(count))
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(range(count), num_replicas=self.world_size, rank=self.rank, shuffle=shuffle,
                                     seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
        return list(sampler)

    def shard_batches(self, indices: Sequence[int], batch_size: int) -> list[list[int]]:
        """Split `indices` into batches as one process would, and keep every world_size-th batch from this
        rank's: each image lands in exactly the batch it would alone, so gathered results equal one process's."""
        batches = [list(indices[i:i + batch_size]) for i in range(0, len(indices), batch_size)]
        return batches[self.rank::self.world_size]

    def unshard(self, parts: list[Any] | None, total_batches: int) -> list[Any]:
        """Rank-0 inverse of shard_batches: per-rank lists of per-batch results back in the original order."""
        if parts is None:
            return []
        ordered = []
        for batch in range(total_batches):
            owner, position = batch % self.world_size, batch // self.world_size
            ordered.append(parts[owner][position])
        return ordered


_PEER_WORDS = ("gloo", "NCCL", "nccl", "c10d", "Connection reset", "Connection closed", "ProcessGroup", "timed out")
_CURRENT: Dist | None = None


def current(device: str = "cpu", timeout_s: float = 600.0) -> Dist:
    """This process's Dist; inside torchrun the process group starts here (once; `device` picks the backend)."""
    global _CURRENT
    if _CURRENT is not None:
        return _CURRENT
    if not env.in_torchrun():
        return Dist()
    import torch
    import torch.distributed as dist

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    short = env.too_few_gpus(env.local_world_size()) if cuda else None  # the same answer on every rank
    if short:
        if device != "auto":
            raise DistributedError(short)
        cuda = False  # fewer GPUs than workers: gloo on the CPU, as the launcher announced
    backend = "nccl" if cuda else "gloo"
    rank_device = f"cuda:{env.local_rank()}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(env.local_rank())
    threads = env.rank_threads()
    if threads:
        torch.set_num_threads(threads)
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError, dist.DistError) as exc:
            raise DistributedError(f"rank {env.rank()}: could not join the process group over {backend} "
                                   f"({first_line(exc, 160, first_only=True)}); check MASTER_ADDR/--rdzv-endpoint "
                                   "and that every node can reach it.") from None
        atexit.register(_shutdown)
    _CURRENT = Dist(dist.get_rank(), dist.get_world_size(), env.local_rank(), env.local_world_size(), backend,
                    rank_device)
    log.debug("rank %d/%d joined over %s on %s (%s threads)", _CURRENT.rank, _CURRENT.world_size, backend,
              rank_device, threads or "default")
    return _CURRENT


def _shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - at exit a dead peer may make this fail; nothing is left to save
            pass

