"""vtool quantize: QuantConfig -> toolchain.quantize.quantize -> attempts table -> --json -> exit 3 when the
budget was missed."""

from __future__ import annotations

from typing import Annotated

import typer

from toolchain.cli import app
from toolchain.cli.common import deprecated, finish, guarded, load_source, outcome, parse_list
from toolchain.cli.launcher import Nproc, launch_if_asked
from toolchain.cli.options import InputSize, Json, NumClasses, Out

MODEL_HELP = "fp32 source: checkpoint/run dir, registry name, fp32 ONNX artifact dir or .onnx file."
DATA_HELP = ("Calibration + held-out data: digits, synthetic, an ImageFolder dir [default: the model's recorded "
             "data, else bundled photo crops for ImageNet models].")
Backend = Annotated[str | None, typer.Option("--backend", hidden=True, help="Deprecated: use --engine.")]


@app.command("quantize")
@guarded
def quantize_cmd(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    mode: str = typer.Option("ptq", "--mode", help="ptq (static, calibrated), qat, dynamic (MatMul/Gemm) or fp16."),
    data: str = typer.Option(None, "--data", "-d", help=DATA_HELP),
    engine: str = typer.Option("onnxruntime", "--engine", help="onnxruntime (QDQ ONNX) or torchao (PT2E, .pt2)."),
    backend: Backend = None,
    calibration: str = typer.Option("minmax", "--calibration", help="minmax, entropy or percentile."),
    samples: int = typer.Option(256, "--samples", help="Calibration images (stratified over classes)."),
    percentile: float = typer.Option(99.99, "--percentile", help="Percentile kept by --calibration percentile."),
    max_drop: float = typer.Option(None, "--max-drop", help="Max top-1 drop on labeled data [default: 0.01]."),
    min_agreement: float = typer.Option(None, "--min-agreement",
                                        help="Min top-1 agreement with fp32 on unlabeled data [default: 0.99]."),
    eval_samples: int = typer.Option(None, "--eval-samples", help="Cap on held-out images [default: all / 200]."),
    target: str = typer.Option("auto", "--target", help="CPU preset: auto (detect), avx2, avx512, avx512-vnni, "
                                                        "amx, arm64, generic."),
    reduce_range: bool = typer.Option(None, "--reduce-range/--no-reduce-range",
                                      help="7-bit weights [default: from --target]."),
    per_channel: bool = typer.Option(True, "--per-channel/--per-tensor", help="Per-channel weight scales."),
    preset: str = typer.Option("auto", "--preset", help="Op preset: auto, cnn, vit (LayerNorm/Softmax/GELU float)."),
    exclude: str = typer.Option(None, "--exclude", help="Comma-separated ONNX node names to keep in float."),
    fallback: bool = typer.Option(True, "--fallback/--no-fallback",
                                  help="On a missed budget try better calibration, then float layers."),
    max_float_nodes: int = typer.Option(24, "--max-float-nodes", help="Most layers the fallback may keep float."),
    epochs: int = typer.Option(3, "--epochs", help="QAT fine-tuning epochs."),
    lr: float = typer.Option(1e-4, "--lr", help="QAT learning rate."),
    augment: bool = typer.Option(False, "--augment/--no-augment", help="QAT: train-time augmentation."),
    nproc: Nproc = None,
    threads: int = typer.Option(None, "--threads", help="Inference threads for evaluation and the speed check."),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Measure a quick speed ratio vs fp32."),
    num_classes: NumClasses = None,
    input_size: InputSize = None,
    out: Out = None,
    json_path: Json = None,
) -> None:
    """Quantize a model to INT8 (or fp16), check it on held-out data and write an artifact."""
    from toolchain.quantize import QuantConfig, quantize
    from toolchain.report.tables import quantize_view

    config = QuantConfig(
        mode=mode, engine=deprecated("--backend", "--engine", backend, engine), calibration=calibration,
        samples=samples, percentile=percentile, max_drop=max_drop, min_agreement=min_agreement,
        eval_samples=eval_samples, target=target, reduce_range=reduce_range, per_channel=per_channel, preset=preset,
        nodes_to_exclude=parse_list(exclude), fallback=fallback, max_float_nodes=max_float_nodes, epochs=epochs,
        lr=lr, augment=augment, threads=threads, speed=speed, out=out,
    )
    if nproc is not None and nproc > 1 and config.mode != "qat":
        from toolchain.errors import UserInputError

        raise UserInputError(f"--nproc runs QAT fine-tuning in parallel; --mode {config.mode} does not train. Drop "
                             "--nproc or use --mode qat.")
    if launch_if_asked(ctx, nproc, "cpu", threads):
        return
    loaded = load_source(model, num_classes=num_classes, input_size=input_size)
    result = outcome(lambda: quantize(loaded, data, config))
    finish(result, quantize_view(result), json_path)
