"""What the target CPU does with INT8, and the integer settings that suit it.

x86 without VNNI multiplies u8 x s8 pairs into saturating int16 sums (vpmaddubsw), so 8-bit weights
can overflow and accuracy collapses unless weights use 7 bits (`reduce_range`) or, on the avx2 target,
bounded pairs (config.IntSettings.weight_range). VNNI/AMX accumulate
straight into int32; ARM prefers symmetric int8 activations. Presets follow optimum-onnx's
AutoQuantizationConfig.avx2/avx512_vnni/arm64 and ORT's quantize_static guidance.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from typing import Any

from toolchain.errors import check_choice

TARGETS = ("auto", "avx2", "avx512", "avx512-vnni", "amx", "arm64", "generic")


@dataclass(frozen=True)
class HardwareProfile:
    """What the target CPU can do with INT8 and the quantization settings that suit it."""

    target: str
    detected: bool
    machine: str
    flags: tuple[str, ...]
    reduce_range: bool
    activation_type: str
    weight_type: str
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_PRESETS: dict[str, tuple[bool, str, str, str]] = {
    # target: (reduce_range, activations, weights, why)
    "avx2": (True, "uint8", "int8", "x86 without VNNI: u8*s8 pairs sum into saturating int16 (vpmaddubsw); "
             "8-bit weights with input-channel pairs |q[2i]| + |q[2i+1]| <= 128 (depthwise: plain 8-bit; "
             "odd input channels: 7-bit) avoid the overflow"),
    "avx512": (True, "uint8", "int8", "AVX-512 without VNNI: same int16 saturation as AVX2; reduce_range on"),
    "avx512-vnni": (False, "uint8", "int8", "VNNI accumulates u8*s8 straight into int32: full 8-bit weights"),
    "amx": (False, "uint8", "int8", "AMX/VNNI accumulate into int32: full 8-bit weights"),
    "arm64": (False, "int8", "int8", "ARM dot-product kernels prefer symmetric int8 activations"),
    "generic": (True, "uint8", "int8", "unknown CPU: the safe x86 default (reduce_range on)"),
}
_INTERESTING = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile", "asimd", "asimddp",
                "i8mm", "sve")


def target_from_flags(flags: set[str] | frozenset[str], machine: str) -> str:
    """Map CPU flags (as /proc/cpuinfo spells them) to one of TARGETS (never 'auto')."""
    arch = machine.lower()
    if arch in ("aarch64", "arm64") or "asimd" in flags:
        return "arm64"
    if "amx_int8" in flags:
        return "amx"
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "avx512-vnni"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "generic"


def hardware_profile(target: str = "auto", cpuinfo: str | None = None, machine: str | None = None) -> HardwareProfile:
    """Detect this CPU (target 'auto', from /proc/cpuinfo) or describe a named target for cross-deployment."""
    check_choice("target", target, TARGETS)
    machine = machine or platform.machine()
    from toolchain.envinfo import parse_cpu_flags, read_cpuinfo

    flags = parse_cpu_flags(read_cpuinfo() if cpuinfo is None else cpuinfo)
    detected = target == "auto"
    name = target_from_flags(flags, machine) if detected else target
    reduce_range, act, weight, note = _PRESETS[name]
    return HardwareProfile(
        target=name, detected=detected, machine=machine,
        flags=tuple(sorted(f for f in flags if f in _INTERESTING)),
        reduce_range=reduce_range, activation_type=act, weight_type=weight, note=note,
    )
