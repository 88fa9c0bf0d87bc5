"""vtool export / vtool parity: thin shells over toolchain.export and toolchain.parity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from toolchain.cli import app
from toolchain.cli.common import console, guarded

MODEL_HELP = "Registry name, checkpoint, run dir, path/file.py:Class or HF dir (an eager PyTorch model)."
DATA_HELP = "digits, synthetic, cifar10 or an ImageFolder dir [default: the model's recorded data, else photos]."


@app.command("export")
@guarded
def export_cmd(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    format: str = typer.Option(..., "--format", "-f", help="onnx, pt2 or torchscript."),
    opset: int = typer.Option(None, "--opset", help="ONNX opset [default: 18; dynamo 18-23, legacy 13-20]."),
    out: Path = typer.Option(None, "--out", "-o", help="Artifact dir [default: exported/<model>-<format>]."),
    static_batch: bool = typer.Option(False, "--static-batch", help="Bake a batch of 1 in (default: dynamic)."),
    exporter: str = typer.Option(None, "--exporter", help="ONNX exporter: dynamo (default) or legacy (fallback)."),
    simplify: bool = typer.Option(False, "--simplify", help="ONNX: run the onnxscript optimizer after export."),
    freeze: bool = typer.Option(False, "--freeze", help="TorchScript: torch.jit.freeze the traced module."),
    data: str = typer.Option(None, "--data", "-d", help=DATA_HELP),
    atol: float = typer.Option(1e-4, "--atol", help="Max abs logit difference allowed vs the eager model."),
    min_agreement: float = typer.Option(1.0, "--min-agreement", help="Min top-1 agreement with the eager model."),
    samples: int = typer.Option(64, "--samples", help="Real images used to verify the export."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the artifact against the eager model."),
    weights: str = typer.Option(None, "--weights", help="state_dict for --model NAME or file.py:Class."),
    num_classes: int = typer.Option(None, "--num-classes", help="Number of outputs (registry/user models)."),
    json_path: Path = typer.Option(None, "--json", help="Write the result as JSON here."),
) -> None:
    """Export a PyTorch model to ONNX, torch.export (.pt2) or TorchScript, then verify it on real images."""
    from toolchain.export import ExportConfig, ExportVerificationError, export_model
    from toolchain.sources import load_model

    config = ExportConfig(format=format, opset=opset, out=out, dynamic_batch=not static_batch, exporter=exporter,
                          simplify=simplify, freeze=freeze, data=data, verify=verify, atol=atol,
                          min_agreement=min_agreement, verify_samples=samples)
    loaded = load_model(model, weights=weights, num_classes=num_classes)
    try:
        result = export_model(loaded, config)
    except ExportVerificationError as exc:
        _finish_export(exc.result, json_path)
        raise
    _finish_export(result, json_path)


def _finish_export(result: Any, json_path: Path | None) -> None:
    from rich.table import Table

    from toolchain.report import write_result

    manifest = result.artifact.manifest
    export = manifest.export
    table = Table(title=f"export {manifest.format}: {result.path} [{manifest.status}]")
    for column in ("batch", "images", "max abs diff", "top-1 agreement"):
        table.add_column(column, justify="right")
    for size, stats in ((result.verification or {}).get("batches") or {}).items():
        table.add_row(size, str(stats["n"]), f"{stats['max_abs_diff']:.3g}", f"{stats['agreement']:.4f}")
    out = console()
    out.print(table)
    details = [f"{export.get('exporter')}", f"{result.time_s:.2f} s", f"{result.artifact.size_mb:.2f} MB"]
    if manifest.format == "onnx":
        details.append(f"opset {export.get('opset')}, checker {export.get('checker')}")
    details.append("dynamic batch" if export.get("dynamic_batch") else "static batch 1")
    out.print("  ".join(details))
    if (result.verification or {}).get("summary"):
        out.print(f"verification: {result.verification['summary']}")
    if json_path is not None:
        write_result(json_path, result.to_dict())


@app.command("parity")
@guarded
def parity_cmd(
    reference: str = typer.Argument(..., help="The model to match: checkpoint, run dir, registry name, artifact."),
    candidate: str = typer.Argument(..., help="The model to check: artifact dir, model file, checkpoint..."),
    data: str = typer.Option(None, "--data", "-d", help=DATA_HELP),
    max_drop: float = typer.Option(0.01, "--max-drop", help="Max top-1 accuracy drop (0.01 = 1 point)."),
    min_agreement: float = typer.Option(0.99, "--min-agreement", help="Min share of images with the same top-1."),
    max_abs_diff: float = typer.Option(None, "--max-abs-diff", help="Also gate on the largest logit difference."),
    limit: int = typer.Option(None, "--limit", help="Use at most N images (stratified over classes)."),
    part: str = typer.Option("val", "--part", help="Data split: val, test or train."),
    backend_ref: str = typer.Option("auto", "--backend-ref", help="Runner for the reference [default: auto]."),
    backend_cand: str = typer.Option("auto", "--backend-cand", help="Runner for the candidate [default: auto]."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(None, "--threads", help="Threads per runner [default: the backend's]."),
    record: bool = typer.Option(True, "--record/--no-record", help="Append the result to the candidate manifest."),
    json_path: Path = typer.Option(None, "--json", help="Write the result as JSON here."),
) -> None:
    """Check that CANDIDATE answers like REFERENCE on the same real images; exit 3 when it does not."""
    from toolchain.errors import ThresholdError
    from toolchain.parity import ParityConfig, check_parity
    from toolchain.report import write_result
    from toolchain.sources import load_model

    config = ParityConfig(data=data, max_drop=max_drop, min_agreement=min_agreement, max_abs_diff=max_abs_diff,
                          limit=limit, part=part, backend_ref=backend_ref, backend_cand=backend_cand, device=device,
                          threads=threads, record=record)
    result = check_parity(load_model(reference), load_model(candidate), config)
    _render_parity(result)
    if json_path is not None:
        write_result(json_path, result.to_dict())
    if not result:
        raise ThresholdError(result.message())


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    return str(value)


def _render_parity(result: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    m = result.metrics
    ref, cand = result.reference, result.candidate
    table = Table(title=f"parity: {ref['name']} ({ref['runner']}) vs {cand['name']} ({cand['runner']}), n={m['n']}")
    for column in ("metric", "reference", "candidate", "delta / threshold"):
        table.add_column(column, justify="right")
    drop = f"max drop {result.thresholds.max_drop:g}"
    table.add_row("top-1", _fmt(m["top1_ref"]), _fmt(m["top1_cand"]), f"{_fmt(m['top1_delta'])} ({drop})")
    table.add_row("top-5", _fmt(m["top5_ref"]), _fmt(m["top5_cand"]), "")
    table.add_row("top-1 agreement", "", _fmt(m["agreement"]), f"min {result.thresholds.min_agreement:g}")
    table.add_row("cosine (mean)", "", _fmt(m["cosine_mean"], 6), "")
    gate = result.thresholds.max_abs_diff
    table.add_row("max abs logit diff", "", _fmt(m["max_abs_diff"]), f"max {gate:g}" if gate is not None else "")
    table.add_row("SQNR (dB)", "", _fmt(m["sqnr_db"], 2), "")
    out = console()
    out.print(table)
    if m["flips_per_class"]:
        flips = ", ".join(f"{escape(name)}: {count}" for name, count in m["flips_per_class"].items())
        out.print(f"top-1 flips by reference class: {flips}")
    out.print("[green]PASSED[/green]" if result else "[red]FAILED[/red]: " + escape("; ".join(result.failures)))
