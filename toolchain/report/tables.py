"""Terminal rendering of every command's result: rich tables and the lines printed under them.

Each `*_view(result)` returns the renderables to print, in order (rich Tables and plain strings), so
the CLI prints them and a notebook or another report can reuse them. Bench tables live in bench.py,
the pipeline's artifact table in pipeline.py.
"""

from __future__ import annotations

from typing import Any

from toolchain.report.format import fmt_metric

View = list[Any]


def _table(title: str, columns: tuple[str, ...] | list[str], left: tuple[str, ...] = (), **kwargs: Any) -> Any:
    from rich.table import Table

    table = Table(title=title, **kwargs)
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    return table


def models_view(entries: list[Any], params: dict[str, int]) -> View:
    """The registry: name, family, parameters, input size, where pretrained weights come from."""
    from rich.table import Table

    table = Table(title="vtool models")
    for column in ("name", "family", "params", "input", "pretrained weights", "description"):
        table.add_column(column, no_wrap=column == "name")
    for entry in entries:
        table.add_row(entry.name, entry.family, f"{params[entry.name] / 1e6:.2f}M",
                      "x".join(map(str, entry.input_size)), entry.pretrained_source, entry.description)
    return [table]


def train_view(result: Any) -> View:
    table = _table(f"trained -> {result.out_dir}", ("metric", "value"), left=("metric",))
    for key, value in result.metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    table.add_row("epochs run", f"{result.epochs_run}{' (early stop)' if result.stopped_early else ''}")
    table.add_row("wall time", f"{result.wall_time_s:.1f} s")
    if getattr(result, "world_size", 1) > 1:
        table.add_row("processes", str(result.world_size))
    table.add_row("best checkpoint", str(result.best_path))
    return [table]


def eval_view(result: Any) -> View:
    summary = _table(f"eval {result.model.get('architecture')} on {result.data.get('source')}/{result.part}",
                     ("accuracy", "top5", "macro F1", "n", "runner"))
    summary.add_row(f"{result.accuracy:.4f}", f"{result.top5:.4f}", f"{result.macro_f1:.4f}", str(result.n),
                    result.runner)
    table = _table("per class", ("class", "precision", "recall", "f1", "support"), left=("class",))
    for name, row in result.per_class.items():
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                      str(row["support"]))
    return [summary, table, *(f"{what}: {path}" for what, path in result.files.items())]


def predict_view(name: str, predictions: list[Any]) -> View:
    table = _table(f"predict {name}", ("image", "rank", "label", "index", "confidence"), left=("image", "label"))
    for pred in predictions:
        for rank, row in enumerate(pred.top, 1):
            table.add_row(pred.image if rank == 1 else "", str(rank), row["label"], str(row["index"]),
                          f"{row['confidence']:.4f}")
    return [table]


def export_view(result: Any) -> View:
    """Verification per batch size, then one line of export facts and the verification summary."""
    manifest = result.artifact.manifest
    export = manifest.export
    table = _table(f"export {manifest.format}: {result.path} [{manifest.status}]",
                   ("batch", "images", "max abs diff", "top-1 agreement"))
    for size, stats in ((result.verification or {}).get("batches") or {}).items():
        table.add_row(size, str(stats["n"]), f"{stats['max_abs_diff']:.3g}", f"{stats['agreement']:.4f}")
    details = [f"{export.get('exporter')}", f"{result.time_s:.2f} s", f"{result.artifact.size_mb:.2f} MB"]
    if manifest.format == "onnx":
        details.append(f"opset {export.get('opset')}, checker {export.get('checker')}")
    details.append("dynamic batch" if export.get("dynamic_batch") else "static batch 1")
    view: View = [table, "  ".join(details)]
    if (result.verification or {}).get("summary"):
        view.append(f"verification: {result.verification['summary']}")
    return view


def parity_view(result: Any) -> View:
    """Reference vs candidate per metric with its threshold; flips by class; PASSED / FAILED."""
    from rich.markup import escape

    m, limits = result.metrics, result.thresholds
    ref, cand = result.reference, result.candidate
    table = _table(f"parity: {ref['name']} ({ref['runner']}) vs {cand['name']} ({cand['runner']}), n={m['n']}",
                   ("metric", "reference", "candidate", "delta / threshold"))
    drop = f"max drop {limits.max_drop:g}" if limits.max_drop is not None else "no drop limit"
    table.add_row("top-1", fmt_metric(m["top1_ref"]), fmt_metric(m["top1_cand"]),
                  f"{fmt_metric(m['top1_delta'])} ({drop})")
    table.add_row("top-5", fmt_metric(m["top5_ref"]), fmt_metric(m["top5_cand"]), "")
    agree = f"min {limits.min_agreement:g}" if limits.min_agreement is not None else ""
    table.add_row("top-1 agreement", "", fmt_metric(m["agreement"]), agree)
    table.add_row("cosine (mean)", "", fmt_metric(m["cosine_mean"], 6), "")
    gate = limits.max_abs_diff
    table.add_row("max abs logit diff", "", fmt_metric(m["max_abs_diff"]), f"max {gate:g}" if gate is not None else "")
    table.add_row("SQNR (dB)", "", fmt_metric(m["sqnr_db"], 2), "")
    view: View = [table]
    if m["flips_per_class"]:
        flips = ", ".join(f"{escape(name)}: {count}" for name, count in m["flips_per_class"].items())
        view.append(f"top-1 flips by reference class: {flips}")
    view.append("[green]PASSED[/green]" if result else "[red]FAILED[/red]: " + escape("; ".join(result.failures)))
    return view


def quantize_view(result: Any) -> View:
    """Every attempt (calibration, float layers, agreement, drop), then target, size, speed and notes."""
    summary = result.summary
    table = _table(f"quantize {summary['mode']} ({summary['engine']}): {result.path or 'nothing written'}",
                   ("step", "calibration", "float layers", "agreement", "top-1", "drop", "result"),
                   left=("step", "calibration", "float layers", "agreement", "top-1", "drop", "result"))
    for row in result.attempts:
        drop = "" if row["top1_delta"] is None else f"{-row['top1_delta']:.4f}"
        top1 = "" if row["top1_cand"] is None else f"{row['top1_cand']:.4f}"
        table.add_row(row["step"], row["calibration"], str(row["float_nodes"]), f"{row['agreement']:.4f}", top1,
                      drop, "ok" if row["passed"] else row["reason"])
    hw = summary.get("hardware", {})
    size = f"size {summary['size_fp32_mb']:.3f} MB -> {summary['size_mb']:.3f} MB ({summary['size_ratio']:.2f}x)"
    view: View = [table, f"target {hw.get('target')} (detected: {hw.get('detected')}): {hw.get('note')}", size]
    speed = summary.get("speed") or {}
    for key in ("ratio_vs_fp32_onnx", "ratio_vs_fp32_torch"):
        if key in speed:
            view.append(f"speed {key.replace('ratio_vs_', 'vs ')}: {speed[key]:.2f}x (batch {speed['batch']}, medians)")
    view += [f"float: {node}: {why}" for node, why in (summary.get("float_nodes_why") or {}).items()]
    view += [f"note: {note}" for note in summary.get("speed_notes") or []]
    return view


def pipeline_view(result: Any) -> View:
    """The artifact table, the stages with their status and time, and where the reports are."""
    from toolchain.report.pipeline import rich_table

    view: View = [rich_table(result.report)] if result.report else []
    view.append("stages: " + ", ".join(f"{n} {s['status']} ({s['seconds']:.1f}s)" for n, s in result.stages.items()))
    view += [f"{kind} report: {path}" for kind, path in result.files.items()]
    return view
