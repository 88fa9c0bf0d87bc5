"""The only place vtool reads the clock for inference: perf_counter around one call + synchronize().

Every timed call is `step(); sync(); read clock`, so on CUDA queued kernels are finished (and
outputs copied back) before a latency is recorded. Memory high-water marks live here too.
"""

from __future__ import annotations

import logging
import resource
import statistics
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import numpy as np

from toolchain.bench.config import WarmupPolicy

log = logging.getLogger(__name__)

Step = Callable[[], object]
Sync = Callable[[], None]
PERCENTILES = (50, 90, 95, 99)


def timed_call(step: Step, sync: Sync) -> float:
    """Seconds for one call, device work included."""
    start = perf_counter()
    step()
    sync()
    return perf_counter() - start


@dataclass
class WarmupReport:
    iterations: int
    seconds: float
    stable: bool


def is_stable(times: list[float], window: int, tolerance: float) -> bool:
    """True when the median of the last `window` times is within `tolerance` of the window before it."""
    if len(times) < 2 * window:
        return False
    last = statistics.median(times[-window:])
    before = statistics.median(times[-2 * window:-window])
    return before > 0 and abs(last - before) / before <= tolerance


def fitting_window(times: list[float], policy: WarmupPolicy) -> int:
    """The policy's window, shrunk (to >= 2) when 2 windows of calls this slow would not fit in `max_s`:
    a 2 s call can never show 2 x 5 settled calls within a 10 s warm-up."""
    if not times or policy.window <= 2:
        return policy.window
    typical = statistics.median(times[-policy.window:])
    fits = int(policy.max_s / (2 * typical)) if typical > 0 else policy.window
    return max(2, min(policy.window, fits))


def warm_up(step: Step, sync: Sync, policy: WarmupPolicy) -> WarmupReport:
    """Call until the minimum count and time are reached and timings settle (or `max_s` runs out)."""
    times: list[float] = []
    start = perf_counter()
    while True:
        elapsed = perf_counter() - start
        done_minimum = len(times) >= policy.min_iterations and elapsed >= policy.min_s
        no_warmup = policy.min_iterations == 0 and policy.min_s == 0
        if done_minimum and (no_warmup or is_stable(times, fitting_window(times, policy), policy.tolerance)):
            return WarmupReport(len(times), elapsed, True)
        if done_minimum and elapsed >= policy.max_s:
            log.debug("warm-up did not settle within %.1f s (%d calls)", policy.max_s, len(times))
            return WarmupReport(len(times), elapsed, False)
        times.append(timed_call(step, sync))


def measure(step: Step, sync: Sync, iterations: int | None, duration_s: float | None,
            min_iterations: int = 1, deadline: float | None = None) -> list[float]:
    """Latencies (s) of `iterations` calls, or of calls until `duration_s` passed (at least `min_iterations`)."""
    if iterations is None and duration_s is None and deadline is None:
        raise ValueError("measure() needs iterations, duration_s or deadline")
    times: list[float] = []
    if deadline is None and duration_s is not None:
        deadline = perf_counter() + duration_s
    while True:
        times.append(timed_call(step, sync))
        if iterations is not None:
            if len(times) >= iterations:
                return times
        elif len(times) >= min_iterations and perf_counter() >= deadline:  # type: ignore[operator]
            return times


@dataclass
class ConcurrentRun:
    latencies: list[float]  # per request, all threads pooled
    wall_s: float  # first request start to last request end
    warmup: list[WarmupReport]


def measure_concurrent(workers: list[tuple[Step, Sync]], policy: WarmupPolicy, iterations: int | None,
                       duration_s: float | None, min_iterations: int = 1) -> ConcurrentRun:
    """N requests in flight from N threads: each warms up, then all start together at a barrier.

    With `iterations` each thread sends that many requests; with `duration_s` all stop at one deadline.
    """
    n = len(workers)
    results: list[list[float]] = [[] for _ in range(n)]
    warmups: list[WarmupReport | None] = [None] * n
    ends = [0.0] * n
    errors: list[BaseException] = []
    shared: dict[str, float] = {}

    def start_clock() -> None:
        shared["start"] = perf_counter()
        if duration_s is not None:
            shared["deadline"] = shared["start"] + duration_s

    barrier = threading.Barrier(n, action=start_clock)

    def work(i: int) -> None:
        step, sync = workers[i]
        try:
            warmups[i] = warm_up(step, sync, policy)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        try:
            results[i] = measure(step, sync, iterations, None, min_iterations, deadline=shared.get("deadline"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        ends[i] = perf_counter()

    threads = [threading.Thread(target=work, args=(i,), name=f"vtool-bench-{i}", daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return ConcurrentRun([t for r in results for t in r], max(ends) - shared["start"],
                         [w for w in warmups if w is not None])


def latency_stats(times_s: list[float]) -> dict[str, float]:
    """mean/std/min/p50/p90/p95/p99/max in milliseconds (linear-interpolated percentiles)."""
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    stats = {"mean": float(ms.mean()), "std": float(ms.std(ddof=1)) if ms.size > 1 else 0.0, "min": float(ms.min())}
    for pct, value in zip(PERCENTILES, np.percentile(ms, PERCENTILES), strict=True):
        stats[f"p{pct}"] = float(value)
    stats["max"] = float(ms.max())
    return {k: round(v, 4) for k, v in stats.items()}


def coefficient_of_variation(times_s: list[float]) -> float:
    if len(times_s) < 2:
        return 0.0
    mean = statistics.fmean(times_s)
    return round(statistics.stdev(times_s) / mean, 4) if mean > 0 else 0.0


# ------------------------------------------------------------------ memory high-water marks

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0: write 5 to clear_refs); False where unsupported."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """Peak resident memory (VmHWM) in MB; falls back to getrusage's lifetime maximum."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def reset_cuda_peak(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


def cuda_peak_mb(device: str) -> float | None:
    """Peak memory held by PyTorch's CUDA allocator (other runtimes' own allocators are not seen)."""
    if device != "cuda":
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / 1024**2, 1)
