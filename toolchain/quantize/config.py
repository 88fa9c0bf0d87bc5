"""QuantConfig (validated) and hardware detection presets for INT8 on CPUs.

Which integer types and whether to use 7-bit weights (`reduce_range`) depends on the CPU that
will run the model: x86 without VNNI multiplies u8 x s8 pairs into saturating int16 sums
(vpmaddubsw), so 8-bit weights overflow and accuracy collapses unless weights use 7 bits.
VNNI/AMX accumulate straight into int32, ARM prefers symmetric int8 activations. Presets follow
optimum-onnx's AutoQuantizationConfig.avx2/avx512_vnni/arm64 and ORT's quantize_static guidance.
"""

from __future__ import annotations

import platform
from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolchain.compare import Thresholds
from toolchain.errors import UserInputError, check_choice, renamed_field

MODES = ("ptq", "qat", "dynamic", "fp16")
# the quantization toolkit (bench/parity --backend picks a runner); xnnpack: INT8 .pte (pip install 'vtool[edge]')
ENGINES = ("onnxruntime", "torchao", "xnnpack")
CALIBRATIONS = ("minmax", "entropy", "percentile")
PRESETS = ("auto", "cnn", "vit")
TARGETS = ("auto", "avx2", "avx512", "avx512-vnni", "amx", "arm64", "generic")
INT_TYPES = ("uint8", "int8")


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
             "7-bit weights (reduce_range) avoid the overflow"),
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


@dataclass
class QuantConfig:
    """How to quantize: mode, engine (the toolkit), calibration, hardware target, accuracy budget, QAT schedule."""

    mode: str = "ptq"
    out: str | Path | None = None  # None: exported/<model>-int8 (or -qat-int8, -dynamic-int8, -fp16)
    engine: str = "onnxruntime"
    calibration: str = "minmax"
    samples: int = 256
    batch_size: int = 32
    per_channel: bool = True
    target: str = "auto"
    reduce_range: bool | None = None  # None: from the hardware target
    activation_type: str | None = None  # None: from the hardware target
    weight_type: str | None = None
    preset: str = "auto"  # op preset: cnn, vit (LayerNorm/Softmax/GELU/residual Add stay float), auto
    max_drop: float | None = None  # top-1 drop budget on labeled data (default 0.01 there)
    min_agreement: float | None = None  # top-1 agreement budget on unlabeled data (default 0.99 there)
    eval_samples: int | None = None  # cap on held-out images used for the budget (None: the whole split)
    fallback: bool = True  # on a missed budget: better calibration, then keep sensitive layers in float
    max_float_nodes: int = 24
    percentile: float = 99.99
    nodes_to_exclude: list[str] = field(default_factory=list)
    epochs: int = 3  # qat
    lr: float = 1e-4  # qat: a tenth of a typical training LR
    freeze_bn_after: float = 0.5  # qat: fraction of epochs after which BatchNorm statistics are frozen
    augment: bool = False  # qat: train-time augmentation (off: fine-tune on the clean images, least drift)
    speed: bool = True  # measure a quick in-process speed ratio against the fp32 model
    speed_batch: int = 1
    threads: int | None = None
    seed: int = 0
    backend: InitVar[str | None] = None  # deprecated name of `engine`

    def __post_init__(self, backend: str | None) -> None:
        renamed_field(self, "backend", "engine", backend)
        check_choice("quantization mode", self.mode, MODES)
        check_choice("quantization engine", self.engine, ENGINES)
        check_choice("calibration method", self.calibration, CALIBRATIONS)
        check_choice("op preset", self.preset, PRESETS)
        check_choice("target", self.target, TARGETS)
        for name in ("activation_type", "weight_type"):
            value = getattr(self, name)
            if value is not None:
                check_choice(name.replace("_", " "), value, INT_TYPES)
        if self.samples < 1:
            raise UserInputError(f"--samples must be >= 1 calibration images, got {self.samples}; try 256.")
        if self.batch_size < 1:
            raise UserInputError(f"--batch-size must be >= 1, got {self.batch_size}.")
        Thresholds(max_drop=self.max_drop, min_agreement=self.min_agreement)  # the one range check (compare.py)
        if self.eval_samples is not None and self.eval_samples < 1:
            raise UserInputError(f"--eval-samples must be >= 1, got {self.eval_samples}.")
        if self.max_float_nodes < 0:
            raise UserInputError(f"--max-float-nodes must be >= 0, got {self.max_float_nodes}.")
        if not 90.0 <= self.percentile < 100.0:
            raise UserInputError(f"--percentile must be in [90, 100), got {self.percentile}; try 99.99.")
        if self.epochs < 1:
            raise UserInputError(f"--epochs must be >= 1 for QAT, got {self.epochs}.")
        if not 0.0 < self.lr < 1.0:
            raise UserInputError(f"--lr must be in (0, 1), got {self.lr}; QAT fine-tunes with a small LR like 1e-4.")
        if not 0.0 <= self.freeze_bn_after <= 1.0:
            raise UserInputError(f"freeze_bn_after must be a fraction in [0, 1], got {self.freeze_bn_after}.")
        if self.speed_batch < 1:
            raise UserInputError(f"speed batch must be >= 1, got {self.speed_batch}.")
        if self.threads is not None and self.threads < 1:
            raise UserInputError(f"--threads must be >= 1, got {self.threads}.")
        if self.mode in ("dynamic", "fp16") and self.engine != "onnxruntime":
            raise UserInputError(
                f"--mode {self.mode} runs on ONNX Runtime only, got --engine {self.engine}; drop --engine."
            )
        self.nodes_to_exclude = list(self.nodes_to_exclude)

    def hardware(self) -> HardwareProfile:
        return hardware_profile(self.target)

    def resolved(self, hardware: HardwareProfile) -> dict[str, Any]:
        """Integer types and reduce_range after applying the hardware preset to unset fields."""
        return {
            "reduce_range": hardware.reduce_range if self.reduce_range is None else self.reduce_range,
            "activation_type": self.activation_type or hardware.activation_type,
            "weight_type": self.weight_type or hardware.weight_type,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
