"""The launching side: `vtool CMD --nproc N` runs `python -m toolchain CMD ...` in N worker processes.

It is torchrun's own machinery (the elastic agent behind `torchrun --standalone`, through
torch.distributed.launcher.elastic_launch), not a home-made scheduler: a c10d rendezvous on a free local
port, no restarts, the workers' stdout and stderr passed straight through. When a worker fails the agent
stops the others and reports every failure; launch() names the root-cause rank with the one-line error the
worker recorded (toolchain.distributed.config.record_error) or, for a crash, its exit code or signal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

from toolchain.distributed.config import FAULT_EXIT_CODE, LAUNCHED_ENV, THREADS_ENV, DistributedConfig
from toolchain.errors import ThresholdError, VtoolError

log = logging.getLogger(__name__)


class LaunchError(VtoolError):
    """A worker of a distributed job failed; the message names the rank and why."""

    def __init__(self, message: str, rank: int, exit_code: int) -> None:
        super().__init__(message)
        self.rank = rank
        self.worker_exit_code = exit_code


def launch(argv: list[str], config: DistributedConfig) -> None:
    """Run `python -m toolchain ARGV` in config.nproc local worker processes and wait for all of them.

    Raises LaunchError naming the failing rank (or ThresholdError when rank 0 missed a quality gate, exit 3).
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    threads = config.threads_per_rank()
    log_dir = tempfile.mkdtemp(prefix="vtool-ddp-")
    launch_config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=config.nproc, run_id=f"vtool-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", rdzv_configs={"timeout": int(config.timeout_s)},
        max_restarts=0, monitor_interval=0.2, logs_specs=DefaultLogsSpecs(log_dir=log_dir),
    )
    env = {LAUNCHED_ENV: "1", THREADS_ENV: str(threads), "OMP_NUM_THREADS": str(threads)}
    log.info("starting %d worker processes (%s, %d threads each)", config.nproc, config.resolved_backend(), threads)
    try:
        with _environment(env), _quiet_agent():
            elastic_launch(launch_config, sys.executable)("-m", "toolchain", *argv)
    except ChildFailedError as exc:
        raise failure_error(exc.failures, config.nproc) from None
    except SignalException as exc:  # Ctrl-C or a kill reached the agent: it stopped the workers
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise LaunchError(f"the distributed job was stopped by {signal.Signals(exc.sigval).name}.", -1,
                          -int(exc.sigval)) from None
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


def failure_error(failures: dict[int, Any], world_size: int) -> VtoolError:
    """The one error to report for a failed job: the root cause, not the ranks that only lost their peer."""
    def info(item: tuple[int, Any]) -> dict[str, Any]:
        data = item[1].error_file_data
        return data if isinstance(data, dict) and "rank" in data else {}

    def secondary(item: tuple[int, Any]) -> bool:  # only saw another rank fail, or was stopped by the agent
        return bool(info(item).get("peer_lost")) or item[1].exitcode == -signal.SIGTERM

    ranked = sorted(failures.items(), key=lambda item: (secondary(item), item[1].timestamp, item[0]))
    rank, failure = ranked[0]
    recorded = info(ranked[0])
    code = failure.exitcode
    if recorded.get("message"):
        message = str(recorded["message"])
        if recorded.get("exit_code") == ThresholdError.exit_code and rank == 0:
            return ThresholdError(message)
        text = f"{message} [rank {rank} of {world_size}]"
    elif code < 0:
        name = failure.signal_name()
        hint = " (the out-of-memory killer sends SIGKILL)" if name == "SIGKILL" else ""
        text = f"rank {rank} of {world_size} was killed by {name}{hint}; the other workers were stopped."
    else:
        why = ("the deliberate test exit (VTOOL_TEST_RANK_EXIT)" if code == FAULT_EXIT_CODE
               else "no error message; its output above shows why")
        text = f"rank {rank} of {world_size} died with exit code {code} ({why}); the other workers were stopped."
    return LaunchError(text, rank, code)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables the workers inherit; restore the old values afterwards."""
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _quiet_agent() -> Iterator[None]:
    """The elastic agent logs its own summary of a failure; launch() reports it as one line instead."""
    logger = logging.getLogger("torch.distributed.elastic")
    old = logger.level
    if not logging.getLogger("toolchain").isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)
