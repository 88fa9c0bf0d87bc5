"""QuantConfig: the flat, validated options of `vtool quantize`, and the small typed settings each step reads.

Users set one flat QuantConfig (every CLI flag is a field). The stage derives from it, once, the
settings each part needs: CalibrationSettings (which images, how many, how ranges are chosen),
IntSettings (integer types, per-channel, reduce_range: what the target CPU runs), PtqSteps (the
algorithms switched on), SearchSettings (the float fallback and its speed floor) and QatSettings.
A step never sees options that are not its own.
"""

from __future__ import annotations

import math
from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolchain.compare import Thresholds
from toolchain.errors import UserInputError, check_choice, renamed_field
from toolchain.quantize.hardware import TARGETS, HardwareProfile, hardware_profile

if TYPE_CHECKING:
    from toolchain.quantize.graph import Layer

MODES = ("ptq", "qat", "dynamic", "fp16")
# the quantization toolkit (bench/parity --backend picks a runner); xnnpack: INT8 .pte (pip install 'vtool[edge]')
ENGINES = ("onnxruntime", "torchao", "xnnpack")
CALIBRATIONS = ("mse", "minmax", "percentile", "entropy")
RECONSTRUCTIONS = ("gptq", "nearest")
SWITCHES = ("auto", "on", "off")
PRESETS = ("auto", "cnn", "vit")
INT_TYPES = ("uint8", "int8")
DISTILL = ("auto", "on", "off")
QAT_STARTS = ("auto", "ptq", "observers")  # where QAT starts: vtool's PTQ model, or torchao's fresh observers
OBSERVER_QAT_LR = 1e-4  # torchao PT2E QAT: a tenth of a typical training LR
PTQ_QAT_LR = 3e-3  # QAT from PTQ: Adam step of a weight in units of its own quantization step
# QAT from PTQ: weight of the activation-matching term against the logits' (0: logits only). Opt-in: on
# Lite0's 11 calibration photos it lowered the held-out MSE (0.00470 -> 0.00406, logits only 0.00450) but
# the 300 judging crops moved within noise (all-INT8 0.947 / 24.6 dB, logits only 0.950 / 24.4 dB).
QAT_FEATURES = 0.0
QAT_MIXUP = 0.0  # QAT from PTQ: Beta(a, a) mixup of two training images, labelled by fp32 online (0: off)


@dataclass(frozen=True)
class CalibrationSettings:
    """Which calibration images, how many, and how activation ranges are chosen from them."""

    method: str
    samples: int
    batch_size: int
    percentile: float
    recon_samples: int
    seed: int


PAIR_LIMIT = 128  # 255 * 128 = 32640 < 2^15: an int16 sum of two u8*s8 products cannot saturate


@dataclass(frozen=True)
class WeightRange:
    """The integers one layer's weights may take: |q| <= qmax, and with `paired` also
    |q[2i]| + |q[2i+1]| <= PAIR_LIMIT for each pair of input channels at one kernel position."""

    qmax: int
    paired: bool = False

    def pair_stride(self, layer: Layer) -> int:
        """Columns between pair partners in graph.weight_matrix (kernel positions per input channel); 0: unpaired."""
        if not self.paired:
            return 0
        return math.prod(layer.kernel) if layer.op == "Conv" else 1


@dataclass(frozen=True)
class IntSettings:
    """Integer formats for the target CPU (after the hardware preset)."""

    per_channel: bool
    reduce_range: bool
    activation_type: str
    weight_type: str
    avx2_kernels: bool = False  # the target runs the runtimes' AVX2 INT8 kernels (no VNNI)

    @property
    def weight_qmax(self) -> int:
        """Largest weight magnitude: 127, or 64 with reduce_range (2 * 255 * 64 < 2^15: no int16 overflow)."""
        return 64 if self.reduce_range else 127

    def weight_range(self, layer: Layer) -> WeightRange:
        """The weight range of one layer: on AVX2, 8 bits even under reduce_range where the kernels allow it.

        Why: AVX2 without VNNI sums u8*s8 products of input channels (2i, 2i+1) at one kernel position into a
        saturating int16 (vpmaddubsw), in GEMM and Conv kernels alike; depthwise kernels widen to int16 and
        use vpmaddwd. So depthwise convs keep plain 8-bit weights, and Conv (even input channels per kernel
        position)/Gemm/MatMul keep 8-bit weights whose pairs sum to at most PAIR_LIMIT: twice the resolution
        of 7-bit weights with no saturation. Measured under `qemu-x86_64 -cpu Haswell-v4` in ONNX Runtime and
        OpenVINO (tests/quantize/test_avx2_kernels.py): at inputs 255, plain 8-bit weights lose 48% of a 1x1
        Conv's or a Gemm's output; paired weights, 7-bit weights and 8-bit depthwise weights are exact. With an
        odd number of input channels (an RGB stem) ONNX Runtime pairs across kernel positions (im2col order)
        where OpenVINO pads the channels, so such a conv keeps 7 bits.
        Other targets with reduce_range (avx512 without VNNI, generic) keep 7 bits: qemu cannot emulate them.
        """
        if not (self.reduce_range and self.avx2_kernels):
            return WeightRange(self.weight_qmax)
        if layer.channelwise:
            return WeightRange(127)
        pairs_one_position = layer.op != "Conv" or (layer.group == 1 and len(layer.weight_shape) == 4
                                                    and layer.weight_shape[1] % 2 == 0)
        return WeightRange(127, paired=True) if pairs_one_position else WeightRange(self.weight_qmax)


@dataclass(frozen=True)
class PtqSteps:
    """The algorithms applied to the fp32 graph before or during quantization, each switchable."""

    cle: str  # cross-layer equalization + high-bias absorption: auto (per-tensor weights only), on, off
    reconstruction: str  # gptq (layer-wise output error) or nearest (round to nearest)
    bias_correction: bool
    refit: str  # refit layers on the INT8 model's own inputs (refine.py): auto (CNN graphs), on, off
    smoothquant: float | None  # alpha for transformer MatMul/Gemm; None: auto (0.5 on transformers)
    stream_alpha: float | None  # activation equalization of CNN residual streams; None: off
    fuse_transformer: str  # ORT transformer fusion for ViT graphs: auto, on, off
    preset: str


@dataclass(frozen=True)
class SearchSettings:
    """The float fallback: how far it may go and the speed it must keep."""

    enabled: bool
    max_float_nodes: int
    min_speedup: float
    exclude: tuple[str, ...]


@dataclass(frozen=True)
class QatSettings:
    """QAT: torchao observers (`lr` absolute) or a fine-tune of vtool's PTQ model (`step_lr` in weight steps)."""

    epochs: int
    lr: float
    freeze_bn_after: float
    augment: bool
    distill: str
    start: str = "auto"
    step_lr: float = PTQ_QAT_LR
    feature_weight: float = QAT_FEATURES
    mixup: float = QAT_MIXUP

    def may_start_from_ptq(self, engine: str) -> bool:
        """Whether some data could make QAT start from PTQ (before the data is resolved)."""
        return self.start != "observers" and engine == "onnxruntime" and self.distill != "off"

    def from_ptq(self, engine: str, labeled: bool) -> bool:
        """Start from vtool's PTQ model: on the onnxruntime engine, when QAT distils (no labels, or asked)."""
        return self.may_start_from_ptq(engine) and (self.start == "ptq" or self.distill == "on" or not labeled)


@dataclass
class QuantConfig:
    """How to quantize: mode, engine, calibration, algorithms, hardware target, budget, fallback, QAT."""

    mode: str = "ptq"
    out: str | Path | None = None  # None: exported/<model>-int8 (or -qat-int8, -dynamic-int8, -fp16)
    engine: str = "onnxruntime"
    calibration: str = "mse"
    samples: int = 256
    batch_size: int = 32
    recon_samples: int = 64  # calibration images whose statistics drive weight reconstruction
    reconstruction: str = "gptq"
    refit: str = "auto"  # refit each layer on the INT8 model's inputs, kept where held-out error drops
    cle: str = "auto"
    bias_correction: bool = False
    smoothquant: float | None = None
    stream_alpha: float | None = None
    fuse_transformer: str = "auto"
    per_channel: bool = True
    target: str = "auto"
    reduce_range: bool | None = None  # None: from the hardware target
    activation_type: str | None = None  # None: from the hardware target
    weight_type: str | None = None
    preset: str = "auto"  # op preset: cnn, vit (LayerNorm/Softmax/GELU stay float), auto
    max_drop: float | None = None  # top-1 drop budget on labeled data (default 0.01 there)
    min_agreement: float | None = None  # top-1 agreement budget on unlabeled data (default 0.99 there)
    eval_samples: int | None = None  # cap on judging images (None: the whole held-out set)
    fallback: bool = True  # on a missed budget: keep the most sensitive layers float while still faster
    max_float_nodes: int = 8
    min_speedup: float = 1.0  # the fallback stops when INT8 would be slower than this times fp32
    percentile: float = 99.99
    nodes_to_exclude: list[str] = field(default_factory=list)
    epochs: int = 3  # qat
    lr: float | None = None  # qat: None: 1e-4 with torchao observers, 3e-3 weight steps from PTQ
    qat_features: float = QAT_FEATURES  # qat from ptq: also match every quantized activation to fp32 (0: off)
    qat_mixup: float = QAT_MIXUP  # qat from ptq: Beta(a, a) mixup of training images, labelled by fp32 (0: off)
    qat_start: str = "auto"  # qat: ptq (fine-tune vtool's INT8 model by distillation), observers (torchao), auto
    freeze_bn_after: float = 0.5  # qat: fraction of epochs after which BatchNorm statistics are frozen
    augment: bool = False  # qat: train-time augmentation (off: fine-tune on the clean images, least drift)
    distill: str = "auto"  # qat: learn from the fp32 model's logits (auto: when the data has no labels)
    overwrite: bool = False
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
        check_choice("weight reconstruction", self.reconstruction, RECONSTRUCTIONS)
        check_choice("--cle", self.cle, SWITCHES)
        check_choice("--refit", self.refit, SWITCHES)
        check_choice("--fuse-transformer", self.fuse_transformer, SWITCHES)
        check_choice("--distill", self.distill, DISTILL)
        check_choice("--qat-start", self.qat_start, QAT_STARTS)
        if self.qat_start == "ptq" and (self.distill == "off" or self.engine != "onnxruntime"):
            raise UserInputError("--qat-start ptq fine-tunes vtool's ONNX INT8 model by distillation from fp32: it "
                                 "needs --engine onnxruntime and --distill auto/on.")
        if not 0 <= self.qat_features <= 100:
            raise UserInputError(f"--qat-features {self.qat_features} must be between 0 (match the logits only) "
                                 "and 100.")
        if not 0 <= self.qat_mixup <= 10:
            raise UserInputError(f"--qat-mixup {self.qat_mixup} must be between 0 (clean images only) and 10 "
                                 "(the Beta(a, a) parameter of the blend weight; e.g. 0.4).")
        check_choice("op preset", self.preset, PRESETS)
        check_choice("target", self.target, TARGETS)
        for name in ("activation_type", "weight_type"):
            value = getattr(self, name)
            if value is not None:
                check_choice(name.replace("_", " "), value, INT_TYPES)
        for name, low in (("samples", 1), ("batch_size", 1), ("recon_samples", 1), ("speed_batch", 1),
                          ("epochs", 1), ("max_float_nodes", 0)):
            if getattr(self, name) < low:
                flag = "--" + name.replace("_", "-")
                raise UserInputError(f"{flag} must be >= {low}, got {getattr(self, name)}.")
        Thresholds(max_drop=self.max_drop, min_agreement=self.min_agreement)  # the one range check (compare.py)
        if self.eval_samples is not None and self.eval_samples < 1:
            raise UserInputError(f"--eval-samples must be >= 1, got {self.eval_samples}.")
        if not 90.0 <= self.percentile < 100.0:
            raise UserInputError(f"--percentile must be in [90, 100), got {self.percentile}; try 99.99.")
        for flag, alpha in (("--smoothquant", self.smoothquant), ("--stream-alpha", self.stream_alpha)):
            if alpha is not None and not 0.0 <= alpha <= 1.0:
                raise UserInputError(f"{flag} alpha must be in [0, 1], got {alpha}; try 0.5 (0 = off).")
        if not 0.0 < self.min_speedup <= 10.0:
            raise UserInputError(f"--min-speedup must be in (0, 10], got {self.min_speedup}; 1.0 = as fast as fp32.")
        if self.lr is not None and not 0.0 < self.lr < 1.0:
            raise UserInputError(f"--lr must be in (0, 1), got {self.lr}; QAT fine-tunes with a small LR like 1e-4.")
        if not 0.0 <= self.freeze_bn_after <= 1.0:
            raise UserInputError(f"freeze_bn_after must be a fraction in [0, 1], got {self.freeze_bn_after}.")
        if self.threads is not None and self.threads < 1:
            raise UserInputError(f"--threads must be >= 1, got {self.threads}.")
        if self.mode in ("dynamic", "fp16") and self.engine != "onnxruntime":
            raise UserInputError(
                f"--mode {self.mode} runs on ONNX Runtime only, got --engine {self.engine}; drop --engine."
            )
        self.nodes_to_exclude = list(self.nodes_to_exclude)

    # ------------------------------------------------------------------ typed views for the steps
    def hardware(self) -> HardwareProfile:
        return hardware_profile(self.target)

    def int_settings(self, hardware: HardwareProfile) -> IntSettings:
        return IntSettings(
            per_channel=self.per_channel,
            reduce_range=hardware.reduce_range if self.reduce_range is None else self.reduce_range,
            activation_type=self.activation_type or hardware.activation_type,
            weight_type=self.weight_type or hardware.weight_type,
            avx2_kernels=hardware.target == "avx2",
        )

    def resolved(self, hardware: HardwareProfile) -> dict[str, Any]:
        """Integer types and reduce_range after applying the hardware preset to unset fields."""
        ints = self.int_settings(hardware)
        return {"reduce_range": ints.reduce_range, "activation_type": ints.activation_type,
                "weight_type": ints.weight_type}

    def calibration_settings(self) -> CalibrationSettings:
        return CalibrationSettings(self.calibration, self.samples, self.batch_size, self.percentile,
                                   self.recon_samples, self.seed)

    def steps(self) -> PtqSteps:
        return PtqSteps(self.cle, self.reconstruction, self.bias_correction, self.refit, self.smoothquant,
                        self.stream_alpha, self.fuse_transformer, self.preset)

    def search(self) -> SearchSettings:
        return SearchSettings(self.fallback, self.max_float_nodes, self.min_speedup, tuple(self.nodes_to_exclude))

    def qat(self) -> QatSettings:
        return QatSettings(self.epochs, OBSERVER_QAT_LR if self.lr is None else self.lr, self.freeze_bn_after,
                           self.augment, self.distill, self.qat_start, PTQ_QAT_LR if self.lr is None else self.lr,
                           self.qat_features, self.qat_mixup)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["CALIBRATIONS", "ENGINES", "MODES", "PRESETS", "TARGETS", "CalibrationSettings", "HardwareProfile",
           "IntSettings", "PtqSteps", "QatSettings", "QuantConfig", "SearchSettings", "hardware_profile"]
