"""Environment fingerprint for benchmark results: CPU model and ISA features, cores, GPU, versions, git commit.

`cpu_features()` is the reusable part (quantization picks VNNI/AVX-512/AMX presets from it). Everything
here tolerates missing files and tools: a field that cannot be read is None, never an exception.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")

# feature name -> the /proc/cpuinfo flags (x86 "flags", ARM "Features") that imply it (any of them)
FEATURE_FLAGS: dict[str, tuple[str, ...]] = {
    "sse4_2": ("sse4_2",),
    "avx": ("avx",),
    "avx2": ("avx2",),
    "fma": ("fma",),
    "f16c": ("f16c",),
    "avx512f": ("avx512f",),
    "avx512bw": ("avx512bw",),
    "avx512_vnni": ("avx512_vnni", "avx512vnni"),
    "avx512_bf16": ("avx512_bf16",),
    "avx_vnni": ("avx_vnni",),
    "amx_tile": ("amx_tile",),
    "amx_int8": ("amx_int8",),
    "amx_bf16": ("amx_bf16",),
    "neon": ("asimd", "neon"),
    "arm_dotprod": ("asimddp",),
    "arm_i8mm": ("i8mm",),
    "sve": ("sve",),
}


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def read_cpuinfo() -> str:
    """/proc/cpuinfo as text ('' where the platform has none)."""
    return _read(CPUINFO)


def parse_cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first CPU listed in a /proc/cpuinfo text (x86 `flags` or ARM `Features`)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return {flag.lower() for flag in value.split()}
    return set()


def features_from_flags(flags: set[str], machine: str = "") -> dict[str, bool]:
    """Map raw flags to vtool's feature names, plus the summary keys `vnni` and `amx`."""
    features = {name: any(flag in flags for flag in aliases) for name, aliases in FEATURE_FLAGS.items()}
    if machine.lower() in ("arm64", "aarch64"):
        features["neon"] = True  # NEON (ASIMD) is mandatory on AArch64 even when no flag list is readable
    features["vnni"] = features["avx512_vnni"] or features["avx_vnni"]
    features["amx"] = features["amx_tile"] and (features["amx_int8"] or features["amx_bf16"])
    return features


def _torch_capability() -> str | None:
    """torch's own dispatch level (e.g. AVX2, AVX512), only when torch is already imported."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - old torch or a build without it
        return None


def cpu_features(cpuinfo: str | None = None, machine: str | None = None) -> dict[str, bool]:
    """Which SIMD/matrix features this CPU has: avx2, avx512f, vnni, amx, neon, ... -> bool.

    Reads /proc/cpuinfo (or the given text). Where no flag list is readable (macOS, Windows), falls back
    to the architecture (AArch64 implies NEON) and torch's CPU capability when torch is imported.
    """
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    arch = platform.machine() if machine is None else machine
    flags = parse_cpu_flags(text)
    if not flags and cpuinfo is None:
        capability = (_torch_capability() or "").upper()
        if capability.startswith("AVX512"):
            flags |= {"avx", "avx2", "fma", "avx512f"}
        elif capability.startswith("AVX2"):
            flags |= {"avx", "avx2", "fma"}
    return features_from_flags(flags, arch)


def cpu_model(cpuinfo: str | None = None) -> str:
    """A human CPU name: /proc/cpuinfo `model name` (x86) or implementer/part (ARM), else platform's."""
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    if fields.get("model name"):
        return fields["model name"]
    if fields.get("hardware") or fields.get("cpu part"):
        return " ".join(filter(None, [fields.get("hardware"), f"part {fields.get('cpu part', '?')}"]))
    return platform.processor() or platform.machine() or "unknown"


def cpu_counts() -> dict[str, int | None]:
    """Logical CPUs in the machine and the ones this process may use (affinity / cgroup-pinned)."""
    logical = os.cpu_count()
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    return {"logical_cpus": logical, "usable_cpus": usable}


def memory_total_gb() -> float | None:
    for line in _read(Path("/proc/meminfo")).splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return None


@functools.lru_cache(maxsize=1)
def git_commit() -> dict[str, Any]:
    """The vtool source's git commit and whether the tree has local changes; empty when not a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return {}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}


def gpu_info() -> dict[str, Any] | None:
    """Name, capability and memory of CUDA device 0 (via torch), or None without a usable GPU."""
    try:
        import torch
    except ImportError:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(0)
        return {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gb": round(props.total_memory / 1024**3, 1),
            "count": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
        }
    except Exception as exc:  # noqa: BLE001 - a broken driver must not break a CPU benchmark
        log.debug("could not query the GPU: %s", exc)
        return None


def load_average() -> list[float] | None:
    """1/5/15-minute load: a busy shared machine makes every timing noisier."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def environment(device: str = "cpu", threads: int | None = None, include_gpu: bool = True) -> dict[str, Any]:
    """The fingerprint stored in every bench result under `env`."""
    from toolchain.artifact import library_versions

    features = cpu_features()
    versions = library_versions()
    env: dict[str, Any] = {
        "cpu": {
            "model": cpu_model(),
            "machine": platform.machine(),
            "features": sorted(name for name, present in features.items() if present),
            "flags": features,
            "torch_capability": _torch_capability(),
            **cpu_counts(),
        },
        "threads": threads,
        "device": device,
        "gpu": gpu_info() if include_gpu else None,
        "memory_gb": memory_total_gb(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "vtool": {"version": versions.get("vtool"), **git_commit()},
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch_threads"] = torch.get_num_threads()
    return env


def describe_cpu(env: dict[str, Any]) -> str:
    """One line for tables and reports: 'AMD EPYC, 2/2 CPUs, avx2 avx512f vnni'."""
    cpu = env.get("cpu", {})
    keep = [f for f in ("avx2", "avx512f", "vnni", "amx", "neon") if cpu.get("flags", {}).get(f)]
    return f"{cpu.get('model', '?')}, {cpu.get('usable_cpus', '?')}/{cpu.get('logical_cpus', '?')} CPUs, " + (
        " ".join(keep) or "no avx2"
    )
