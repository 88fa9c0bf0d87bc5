"""Terminal rendering of every command's result: rich tables and the lines printed under them.

Each `*_view(result)` returns the renderables to print, in order (rich Tables and plain strings), so
the CLI prints them and a notebook or another report can reuse them. Bench tables live in bench.py,
the pipeline's artifact table in pipeline.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolchain.report.format import fmt_metric

View = list[Any]


def _table(title: str, columns: tuple[str, ...] | list[str], left: tuple[str, ...] = (), **kwargs: Any) -> Any:
    from rich.table import Table

    table = Table(title=title, **kwargs)
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    return table


def models_view(entries: list[Any]) -> View:
    """The registry: name, family, parameters (at the entry's defaults), input size, where pretrained weights come
    from."""
    from rich.table import Table

    table = Table(title="vtool models")
    for column in ("name", "family", "params", "input", "pretrained weights", "description"):
        table.add_column(column, no_wrap=column == "name", justify="right" if column == "params" else "left")
    for entry in entries:
        params = "n/a" if entry.params is None else f"{entry.params / 1e6:.2f}M"
        table.add_row(entry.name, entry.family, params, "x".join(map(str, entry.input_size)), entry.pretrained_source,
                      entry.description)
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
    batch = export.get("batch") or {}
    if batch.get("max"):
        details.append(f"dynamic batch 1..{batch['max']}")
    elif batch.get("sizes"):
        details.append(f"static batch {', '.join(map(str, batch['sizes']))}")
    else:
        details.append("dynamic batch" if export.get("dynamic_batch") else "static batch 1")
    view: View = [table, "  ".join(details)]
    if "portable_ops" in export:
        view.append(_delegation_line(export))
    if (result.verification or {}).get("summary"):
        view.append(f"verification: {result.verification['summary']}")
    return view


def _delegation_line(export: dict[str, Any]) -> str:
    """ExecuTorch: what XNNPACK took and what falls back to portable kernels."""
    info = export.get("delegation") or {}
    infos = list(info.values()) if "delegate" not in info else [info]
    delegated = sum(i.get("delegated_ops", 0) for i in infos)
    portable = ", ".join(export["portable_ops"]) or "none"
    return f"XNNPACK delegated {delegated} op(s); portable-kernel fallback: {portable}"


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
    ci = m.get("agreement_ci")
    if ci:
        flips = m.get("flips", 0)
        agree = f"95% CI [{ci[0]:.3f}, {ci[1]:.3f}], {flips} flip{'s' if flips != 1 else ''} of {m['n']}" + (
            f" ({agree})" if agree else "")
    table.add_row("top-1 agreement", "", fmt_metric(m["agreement"]), agree)
    table.add_row("cosine (mean)", "", fmt_metric(m["cosine_mean"], 6), "")
    gate = limits.max_abs_diff
    table.add_row("max abs logit diff", "", fmt_metric(m["max_abs_diff"]), f"max {gate:g}" if gate is not None else "")
    table.add_row("SQNR (dB)", "", fmt_metric(m["sqnr_db"], 2), "")
    view: View = [table]
    if m["flips_per_class"]:
        flips = ", ".join(f"{escape(name)}: {count}" for name, count in m["flips_per_class"].items())
        view.append(f"top-1 flips by reference class: {flips}")
    notes = result.notes
    view += [escape(note) for note in notes]
    view.append(escape(limits.statement))
    if getattr(result, "explanation", None) is not None:
        view += explanation_view(result.explanation)
    if result:
        view.append("[green]PASSED[/green]" + (" [yellow](inconclusive)[/yellow]" if notes else ""))
    else:
        view.append("[red]FAILED[/red]: " + escape("; ".join(result.failures)))
    return view


def explanation_view(parity: Any) -> View:
    """Explanation parity: mean and worst Spearman / top-region IoU of the two models' heatmaps."""
    data = parity.to_dict()
    table = _table(f"explanation parity ({data['method']}, {data['n']} images, top {data['top_fraction']:.0%} "
                   "region)", ("measure", "mean", "worst", "worst images"))
    worst = ", ".join(f"#{i}" for i in data["worst"][:4])
    table.add_row("Spearman rank correlation", f"{data['spearman_mean']:.3f}", f"{data['spearman_worst']:.3f}", worst)
    table.add_row("top-region IoU", f"{data['iou_mean']:.3f}", f"{data['iou_worst']:.3f}", "")
    return [table, "[dim]heatmaps are evidence, not proof (see the report's caveat); 1.0 = same pixels[/dim]"]


def explain_view(result: Any) -> View:
    """Per image: the top-k answer, the class explained and where the overlay PNG went."""
    table = _table(f"explain {result.model}: {result.method}" + (f" at {result.layer}" if result.layer else ""),
                   ("image", "top-k", "explained", "overlay"), left=("image", "top-k", "explained", "overlay"))
    for item in result.items:
        top = ", ".join(f"{t['label']} {t['confidence']:.3f}" for t in item.top)
        table.add_row(Path(item.image).name, top, item.target_label, item.overlay or "")
    return [table]


def quantize_view(result: Any) -> View:
    """The steps applied, every candidate (float layers, agreement, drop, SQNR, speed), then target, size, notes."""
    summary = result.summary
    columns = ("step", "float layers", "agreement", "top-1", "drop", "SQNR dB", "vs fp32", "result")
    table = _table(f"quantize {summary['mode']} ({summary['engine']}): {result.path or 'nothing written'}",
                   columns, left=("step", "result"))
    for row in result.attempts:
        drop = "" if row.get("top1_delta") is None else f"{-row['top1_delta']:.4f}"
        top1 = "" if row.get("top1_cand") is None else f"{row['top1_cand']:.4f}"
        sqnr = "" if row.get("sqnr_db") is None else f"{row['sqnr_db']:.1f}"
        speed = "" if row.get("speedup_vs_fp32") is None else f"{row['speedup_vs_fp32']:.2f}x"
        macs = row.get("float_macs_pct")
        floats = str(row["float_nodes"]) + (f" ({macs:.1f}% MACs)" if macs else "")
        table.add_row(row["step"], floats, f"{row['agreement']:.4f}", top1, drop, sqnr, speed,
                      "ok" if row["passed"] else row["reason"])
    view: View = []
    steps = [s for s in summary.get("steps") or [] if s.get("applied")]
    if steps:
        view.append("steps: " + ", ".join(s["step"] for s in steps))
    view.append(table)
    hw = summary.get("hardware", {})
    size = f"size {summary['size_fp32_mb']:.3f} MB -> {summary['size_mb']:.3f} MB ({summary['size_ratio']:.2f}x)"
    view += [f"target {hw.get('target')} (detected: {hw.get('detected')}): {hw.get('note')}", size]
    judged = summary.get("parity") or {}
    if judged.get("agreement_ci"):  # the chosen candidate against fp32, with its interval (compare.py's gate)
        low, high = judged["agreement_ci"]
        rule = (summary.get("budget") or {}).get("rule", "ci")
        view.append(f"judged on {judged['n']} held-out images: agreement {judged['agreement']:.4f} (95% CI "
                    f"[{low:.3f}, {high:.3f}], {judged.get('flips')} flips); gate rule '{rule}'")
    if summary.get("float_summary"):
        view.append(summary["float_summary"])
    speed = summary.get("speed") or {}
    for key in ("ratio_vs_fp32_onnx", "ratio_vs_fp32_torch"):
        if key in speed:
            view.append(f"speed {key.replace('ratio_vs_', 'vs ')}: {speed[key]:.2f}x (batch {speed['batch']}, medians)")
    view += [f"float: {node}: {why}" for node, why in (summary.get("float_nodes_why") or {}).items()]
    view += [f"note: {note}" for note in summary.get("speed_notes") or []]
    return view


def pipeline_view(result: Any) -> View:
    """The artifact table, the stages with their status and time, and where the reports are."""
    from rich.markup import escape

    from toolchain.report.pipeline import failure_lines, note_lines, rich_table

    view: View = [rich_table(result.report)] if result.report else []
    for row in (result.report or {}).get("explanation", []):
        view.append(f"explanation parity {row['artifact']} ({row['method']}, {row['n']} images): Spearman mean "
                    f"{row['spearman_mean']:.3f} worst {row['spearman_worst']:.3f}, top-region IoU mean "
                    f"{row['iou_mean']:.3f} worst {row['iou_worst']:.3f}")
    view.append("stages: " + ", ".join(f"{n} {s['status']} ({s['seconds']:.1f}s)" for n, s in result.stages.items()))
    report = result.report or {"failures": [{"stage": n, "error": f["error"]} for n, f in result.failures.items()]}
    view += [f"[red]FAILED[/red] {escape(line)}" for line in failure_lines(report)]
    view += [f"[yellow]{escape(line)}[/yellow]" for line in note_lines(report)]
    if result.report.get("classes"):
        view.append(escape(f"classes: {', '.join(result.report['classes'][:20])}"))
    view += [f"{kind} report: {path}" for kind, path in result.files.items()]
    return view
