"""vtool quantize: QuantConfig -> toolchain.quantize.quantize -> attempts table -> --json -> exit 3 when the
budget was missed."""

from __future__ import annotations

from typing import Annotated

import typer

from toolchain.cli import app
from toolchain.cli.common import deprecated, finish, guarded, load_source, outcome, parse_list, schema_id
from toolchain.cli.launcher import Nproc, launch_if_asked
from toolchain.cli.options import Json, Out, Overwrite, Track, TrackUri, model_options, output_options
from toolchain.models.config import ModelOptions

MODEL_HELP = "fp32 source: checkpoint/run dir, registry name, fp32 ONNX artifact dir or .onnx file."
DATA_HELP = ("Calibration + held-out data: digits, synthetic, an ImageFolder, a flat folder of images, an .npy "
             "array (N,C,H,W preprocessed) [default: the model's recorded data, else bundled photo crops for ImageNet "
             "models]. Judging images never overlap calibration.")
Backend = Annotated[str | None, typer.Option("--backend", hidden=True, help="Deprecated: use --engine.")]


@app.command("quantize")
@guarded
@output_options
@model_options
def quantize_cmd(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    mode: str = typer.Option("ptq", "--mode", help="ptq (static, calibrated), qat, dynamic (MatMul/Gemm) or fp16."),
    data: str = typer.Option(None, "--data", "-d", help=DATA_HELP),
    engine: str = typer.Option("onnxruntime", "--engine", help="onnxruntime (QDQ ONNX), torchao (PT2E, .pt2) or "
                               "xnnpack (PT2E, INT8 .pte for ExecuTorch; pip install 'vtool[edge]')."),
    backend: Backend = None,
    calibration: str = typer.Option("mse", "--calibration",
                                    help="Activation ranges: mse (least quantization error), minmax, percentile, "
                                         "entropy (ONNX Runtime's KL calibrator)."),
    samples: int = typer.Option(256, "--samples", help="Calibration images (stratified over classes)."),
    reconstruction: str = typer.Option("gptq", "--reconstruction",
                                       help="Weights: gptq (layer-wise output error, activation-aware) or nearest."),
    recon_samples: int = typer.Option(64, "--recon-samples",
                                      help="Calibration images driving gptq, --refit and bias correction."),
    refit: str = typer.Option("auto", "--refit",
                              help="Refit each layer, in graph order, on the INT8 model's own inputs; a refit is "
                                   "kept only where it lowers the layer's error on held-out calibration images: "
                                   "auto (CNN graphs), on, off."),
    cle: str = typer.Option("auto", "--cle", help="Cross-layer equalization + high-bias absorption: auto (with "
                                                  "--per-tensor), on, off."),
    bias_correction: bool = typer.Option(False, "--bias-correction/--no-bias-correction",
                                         help="Correct each layer's mean output shift from INT8 weights."),
    smoothquant: float = typer.Option(None, "--smoothquant",
                                      help="SmoothQuant alpha for transformer MatMul/Gemm [default: 0.5 on "
                                           "transformers, off otherwise; 0 = off]."),
    stream_alpha: float = typer.Option(None, "--stream-alpha",
                                       help="Equalize CNN residual streams per channel (SmoothQuant for convs): "
                                            "alpha [default: off; 0 = off]."),
    fuse_transformer: str = typer.Option("auto", "--fuse-transformer",
                                         help="ViT graphs: fuse attention/LayerNorm/GELU into ONNX Runtime's ops and "
                                              "try dynamic INT8 on them first (runs on onnxruntime only): auto (on "
                                              "transformer graphs), on, off."),
    min_speedup: float = typer.Option(1.0, "--min-speedup",
                                      help="The float fallback stops before INT8 gets slower than this x fp32."),
    distill: str = typer.Option("auto", "--distill", help="QAT: learn fp32's logits instead of labels: auto "
                                                          "(when the data has no labels), on, off."),
    percentile: float = typer.Option(99.99, "--percentile", help="Percentile kept by --calibration percentile."),
    max_drop: float = typer.Option(None, "--max-drop", help="Max top-1 drop on labeled data [default: 0.01]."),
    min_agreement: float = typer.Option(None, "--min-agreement",
                                        help="Min top-1 agreement with fp32 on unlabeled data [default: 0.95]."),
    eval_samples: int = typer.Option(None, "--eval-samples", help="Cap on held-out images [default: all / 200]."),
    target: str = typer.Option("auto", "--target", help="CPU preset: auto (detect), avx2, avx512, avx512-vnni, "
                                                        "amx, arm64, generic."),
    reduce_range: bool = typer.Option(None, "--reduce-range/--no-reduce-range",
                                      help="7-bit weights [default: from --target]."),
    per_channel: bool = typer.Option(True, "--per-channel/--per-tensor", help="Per-channel weight scales."),
    preset: str = typer.Option("auto", "--preset", help="Op preset: auto, cnn, vit (LayerNorm/Softmax/GELU float)."),
    exclude: str = typer.Option(None, "--exclude", help="Comma-separated ONNX node names to keep in float."),
    fallback: bool = typer.Option(True, "--fallback/--no-fallback",
                                  help="On a missed budget keep the most damaging layers float (while faster)."),
    max_float_nodes: int = typer.Option(8, "--max-float-nodes", help="Most layers the fallback may keep float."),
    qat_start: str = typer.Option("auto", "--qat-start",
                                  help="QAT: ptq (vtool's PTQ model, its float fallback included, fine-tuned on "
                                       "fp32's logits; keeps an epoch only if held-out loss drops), observers "
                                       "(torchao PT2E), auto (ptq when distilling on CNN graphs, else observers)."),
    qat_features: float = typer.Option(0.0, "--qat-features",
                                       help="QAT from PTQ: also match every quantized activation to its fp32 "
                                            "value, with this weight beside the logits (e.g. 1; more targets per "
                                            "image). 0: logits only."),
    qat_mixup: float = typer.Option(0.0, "--qat-mixup",
                                    help="QAT from PTQ: blend each training image with another (weight ~ "
                                         "Beta(A, A), e.g. 0.4) and learn fp32's logits of the blend: new inputs "
                                         "every step when there are few photos. 0: clean images only."),
    epochs: int = typer.Option(3, "--epochs", help="QAT fine-tuning epochs."),
    lr: float = typer.Option(None, "--lr", help="QAT learning rate [default: 1e-4 (observers); 3e-3 weight "
                                                "quantization steps (--qat-start ptq)]."),
    augment: bool = typer.Option(False, "--augment/--no-augment", help="QAT: train-time augmentation."),
    nproc: Nproc = None,
    threads: int = typer.Option(None, "--threads", help="Inference threads for evaluation and the speed check."),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Measure a quick speed ratio vs fp32."),
    out: Out = None,
    overwrite: Overwrite = False,
    track: Track = None,
    track_uri: TrackUri = None,
    json_path: Json = None,
    options: ModelOptions | None = None,
) -> None:
    """Quantize a model to INT8 (or fp16), check it on held-out data and write an artifact."""
    from toolchain.quantize import QuantConfig, quantize
    from toolchain.report.tables import quantize_view

    config = QuantConfig(
        mode=mode, engine=deprecated("--backend", "--engine", backend, engine), calibration=calibration,
        samples=samples, reconstruction=reconstruction, recon_samples=recon_samples, refit=refit, cle=cle,
        bias_correction=bias_correction, smoothquant=smoothquant, stream_alpha=stream_alpha,
        fuse_transformer=fuse_transformer, min_speedup=min_speedup, distill=distill,
        percentile=percentile, max_drop=max_drop, min_agreement=min_agreement,
        eval_samples=eval_samples, target=target, reduce_range=reduce_range, per_channel=per_channel, preset=preset,
        nodes_to_exclude=parse_list(exclude), fallback=fallback, max_float_nodes=max_float_nodes, epochs=epochs,
        lr=lr, qat_start=qat_start, qat_features=qat_features, qat_mixup=qat_mixup,
        augment=augment, threads=threads, speed=speed,
        out=out, overwrite=overwrite,
    )
    if nproc is not None and nproc > 1 and config.mode != "qat":
        from toolchain.errors import UserInputError

        raise UserInputError(f"--nproc runs QAT fine-tuning in parallel; --mode {config.mode} does not train. Drop "
                             "--nproc or use --mode qat.")
    if launch_if_asked(ctx, nproc, "cpu", threads):
        return
    loaded = load_source(model, options=options, data=data)
    from dataclasses import asdict

    from toolchain.distributed.config import is_main_process
    from toolchain.tracking import log_quantize, tracking

    track = track if is_main_process() else None  # one tracked run: rank 0's
    with tracking(track, f"quantize-{mode}-{loaded.name}", out, track_uri, "quantize") as tracker:
        result = outcome(lambda: quantize(loaded, data, config))
        log_quantize(tracker, result, {"model": model, "data": data, "quantize": asdict(config)})
    finish(result, quantize_view(result), json_path, schema=schema_id("quantize"))
