"""What a distributed run is: DistributedConfig (validated) and the torchrun environment, read without torch.

torchrun (and `vtool ... --nproc N`, which starts torchrun's elastic agent) gives every worker process
RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE; a process without them is a single-process run. Nothing
here imports torch, so the CLI can validate --nproc and read the rank before any heavy import.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

from toolchain.errors import UserInputError, check_choice

log = logging.getLogger(__name__)

BACKENDS = ("auto", "gloo", "nccl")
DEVICES = ("auto", "cpu", "cuda")
LAUNCHED_ENV = "VTOOL_DDP_LAUNCHED"  # set by `vtool --nproc`: the parent reports worker errors, workers stay quiet
THREADS_ENV = "VTOOL_THREADS_PER_RANK"
FAULT_ENV = "VTOOL_TEST_RANK_EXIT"  # "RANK:EPOCH": that rank exits (code 13) as the epoch starts; tests use it
FAULT_EXIT_CODE = 13


@dataclass
class DistributedConfig:
    """How many worker processes to start on this machine and how they talk.

    `nproc`: worker processes (1 runs in this process, no torchrun). `backend`: auto picks nccl for CUDA
    and gloo for CPU. `threads`: intra-op threads per worker (None: this machine's cores / nproc, at least 1).
    `timeout_s`: how long a collective waits for a silent peer before the job fails.
    """

    nproc: int = 1
    device: str = "auto"
    backend: str = "auto"
    threads: int | None = None
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not isinstance(self.nproc, int) or self.nproc < 1:
            raise UserInputError(f"--nproc must be a whole number >= 1 (worker processes), got {self.nproc}; use 1 "
                                 "to run in this process or N > 1 to start N torchrun workers.")
        check_choice("device", self.device, DEVICES)
        check_choice("distributed backend", self.backend, BACKENDS)
        if self.threads is not None and self.threads < 1:
            raise UserInputError(f"--threads must be >= 1 per worker, got {self.threads}.")
        if not self.timeout_s > 0:
            raise UserInputError(f"the collective timeout must be > 0 seconds, got {self.timeout_s}.")
        if self.backend == "nccl" and self.device == "cpu":
            raise UserInputError("The nccl backend needs CUDA devices; use gloo (or auto) with --device cpu.")
        cores = os.cpu_count() or 1
        if self.nproc > cores and self.resolved_device() == "cpu":
            log.warning("--nproc %d starts more worker processes than this machine has CPU cores (%d); they will "
                        "compete for the cores and run slower than %d processes would", self.nproc, cores, cores)

    @property
    def distributed(self) -> bool:
        return self.nproc > 1

    def resolved_device(self) -> str:
        """cpu or cuda (auto: cuda when torch sees one GPU per worker; torch is imported only then)."""
        if self.device == "cpu":
            return "cpu"
        from toolchain.train.setup import resolve_device

        device = resolve_device(self.device)
        if device == "cuda" and self.distributed:
            short = too_few_gpus(self.nproc)
            if short:
                if self.device == "cuda":
                    raise UserInputError(short)
                return "cpu"  # auto: more workers than GPUs train on the CPU (gloo), as runtime.current() does
        return device

    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "nccl" if self.resolved_device() == "cuda" else "gloo"

    def threads_per_rank(self) -> int:
        """Explicit --threads, else this machine's cores shared evenly between the workers (>= 1)."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.nproc)


# ------------------------------------------------------------------ the worker's environment (no torch)


def world_size() -> int:
    """Processes in the job (1 outside torchrun)."""
    return _env_int("WORLD_SIZE", 1)


def rank() -> int:
    return _env_int("RANK", 0)


def too_few_gpus(workers: int) -> str | None:
    """Why `workers` processes on this machine cannot each take a CUDA device, or None when they can.

    The one rule for the launcher (DistributedConfig) and every worker (runtime.current): with --device auto
    they fall back to gloo on the CPU, with --device cuda they stop with this line.
    """
    import torch

    gpus = torch.cuda.device_count()
    if workers <= gpus:
        return None
    return (f"--nproc {workers} on --device cuda needs one GPU per worker and this machine has {gpus}: use "
            f"--nproc {max(gpus, 1)} or --device cpu.")


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0)


def local_world_size() -> int:
    return _env_int("LOCAL_WORLD_SIZE", 1)


def in_torchrun() -> bool:
    """True in a worker of a multi-process job (torchrun or `vtool --nproc`)."""
    return world_size() > 1


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one process that writes files, logs and prints results."""
    return rank() == 0


def launched_by_vtool() -> bool:
    """True in a worker started by `vtool ... --nproc N` (its parent prints the failing rank's error)."""
    return os.environ.get(LAUNCHED_ENV) == "1" and in_torchrun()


def rank_threads() -> int | None:
    """Intra-op threads this worker should use: what `vtool --nproc` chose, else torchrun's OMP_NUM_THREADS."""
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = _env_int(name, 0)
        if value > 0:
            return value
    return None


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


# ------------------------------------------------------------------ failures


def record_error(message: str, exit_code: int = 1, peer_lost: bool = False) -> None:
    """Write this worker's one-line error where torchrun's agent reads it (TORCHELASTIC_ERROR_FILE), so the
    launching process can name the failing rank and its reason (`peer_lost`: this rank only saw another one
    fail, so it is not the root cause); a no-op outside torchrun."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or not in_torchrun():
        return
    payload = {"message": message, "timestamp": int(time.time()), "rank": rank(), "exit_code": exit_code,
               "peer_lost": peer_lost}
    try:
        with open(path, "w") as fp:
            json.dump(payload, fp)
    except OSError as exc:  # the message is still printed where the worker's stderr goes
        log.debug("could not write %s: %s", path, exc)


def fault_point(epoch: int) -> None:
    """Testing hook: with VTOOL_TEST_RANK_EXIT=RANK:EPOCH, that rank dies (os._exit, no cleanup, like a crash
    or an OOM kill) as epoch EPOCH starts."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    want_rank, _, want_epoch = spec.partition(":")
    if want_rank.strip() == str(rank()) and want_epoch.strip() == str(epoch):
        os._exit(FAULT_EXIT_CODE)
