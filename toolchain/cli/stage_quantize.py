"""vtool quantize: a thin shell over toolchain.quantize (INT8 PTQ / QAT / dynamic, fp16)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from toolchain.cli import app
from toolchain.cli.common import console, guarded, parse_list, parse_size

MODEL_HELP = "fp32 source: checkpoint/run dir, registry name, fp32 ONNX artifact dir or .onnx file."
DATA_HELP = ("Calibration + held-out data: digits, synthetic, an ImageFolder dir [default: the model's recorded "
             "data, else bundled photo crops for ImageNet models].")


@app.command("quantize")
@guarded
def quantize_cmd(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    mode: str = typer.Option("ptq", "--mode", help="ptq (static, calibrated), qat, dynamic (MatMul/Gemm) or fp16."),
    data: str = typer.Option(None, "--data", "-d", help=DATA_HELP),
    backend: str = typer.Option("onnxruntime", "--backend", help="onnxruntime (QDQ ONNX) or torchao (PT2E, .pt2)."),
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
    threads: int = typer.Option(None, "--threads", help="Inference threads for evaluation and the speed check."),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Measure a quick speed ratio vs fp32."),
    num_classes: int = typer.Option(None, "--num-classes", help="Classes of a bare .onnx file."),
    input_size: str = typer.Option(None, "--input-size", help="Input size of a bare .onnx file (N or HxW)."),
    out: Path = typer.Option(None, "--out", "-o", help="Artifact dir [default: exported/<model>-int8]."),
    json_path: Path = typer.Option(None, "--json", help="Write the result as JSON here."),
) -> None:
    """Quantize a model to INT8 (or fp16), check it on held-out data and write an artifact."""
    from toolchain.quantize import QuantBudgetError, QuantConfig, quantize
    from toolchain.sources import load_model

    config = QuantConfig(
        mode=mode, backend=backend, calibration=calibration, samples=samples, percentile=percentile, max_drop=max_drop,
        min_agreement=min_agreement, eval_samples=eval_samples, target=target, reduce_range=reduce_range,
        per_channel=per_channel, preset=preset, nodes_to_exclude=parse_list(exclude), fallback=fallback,
        max_float_nodes=max_float_nodes, epochs=epochs, lr=lr, augment=augment, threads=threads, speed=speed, out=out,
    )
    loaded = load_model(model, num_classes=num_classes, input_size=parse_size(input_size))
    try:
        result = quantize(loaded, data, config)
    except QuantBudgetError as exc:
        _render(exc.result, json_path)
        raise
    _render(result, json_path)


def _render(result: Any, json_path: Path | None) -> None:
    from rich.table import Table

    from toolchain.report import write_result

    summary = result.summary
    out = console()
    table = Table(title=f"quantize {summary['mode']} ({summary['backend']}): {result.path or 'nothing written'}")
    for column in ("step", "calibration", "float layers", "agreement", "top-1", "drop", "result"):
        table.add_column(column)
    for row in result.attempts:
        drop = "" if row["top1_delta"] is None else f"{-row['top1_delta']:.4f}"
        top1 = "" if row["top1_cand"] is None else f"{row['top1_cand']:.4f}"
        table.add_row(row["step"], row["calibration"], str(row["float_nodes"]), f"{row['agreement']:.4f}", top1,
                      drop, "ok" if row["passed"] else row["reason"])
    out.print(table)
    hw = summary.get("hardware", {})
    out.print(f"target {hw.get('target')} (detected: {hw.get('detected')}): {hw.get('note')}")
    out.print(f"size {summary['size_fp32_mb']:.3f} MB -> {summary['size_mb']:.3f} MB ({summary['size_ratio']:.2f}x)")
    speed = summary.get("speed") or {}
    for key in ("ratio_vs_fp32_onnx", "ratio_vs_fp32_torch"):
        if key in speed:
            out.print(f"speed {key.replace('ratio_vs_', 'vs ')}: {speed[key]:.2f}x (batch {speed['batch']}, medians)")
    for node, why in (summary.get("float_nodes_why") or {}).items():
        out.print(f"float: {node}: {why}")
    for note in summary.get("speed_notes") or []:
        out.print(f"note: {note}")
    if json_path is not None:
        write_result(json_path, result.to_dict())
