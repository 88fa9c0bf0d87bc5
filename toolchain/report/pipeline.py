"""The pipeline report rendered: the artifact table (terminal, Markdown), and one self-contained HTML page
with every plot embedded as base64.

Rendering only: it takes the numbers the stages produced (pipeline/report.py collects them) and lays them out.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from toolchain.report.format import fmt_cell, markdown_table


def columns(batch_sizes: list[int]) -> list[tuple[str, str]]:
    """Table columns: latency for every benchmarked batch size, throughput and speedup at the largest."""
    largest = max(batch_sizes)
    return [
        ("artifact", "artifact"), ("runner", "runner"), ("format", "format"), ("precision", "precision"),
        ("size_mb", "size MB"), *[(f"p50_b{b}_ms", f"p50 b{b} ms") for b in batch_sizes],
        ("throughput_ips", f"img/s b{largest}"), ("speedup", "speedup"), ("accuracy", "accuracy"),
        ("top1_delta", "top-1 delta"), ("agreement", "agreement"), ("passed", "parity"),
    ]


def markdown_rows(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    """The artifact table as Markdown."""
    return markdown_table([title for _, title in cols], [[fmt_cell(row.get(key), key) for key, _ in cols]
                                                          for row in rows])


def rich_table(report: dict[str, Any]) -> Any:
    """The artifact table for the terminal (format column left out: the artifact name says it)."""
    from rich import box
    from rich.table import Table

    cols = [c for c in columns(report.get("batch_sizes", [1])) if c[0] != "format"]
    table = Table(title=f"vtool pipeline: {report.get('run')}", box=box.SIMPLE_HEAD)
    for _, title in cols:
        table.add_column(title, justify="left" if title in ("artifact", "runner") else "right")
    for row in report.get("rows", []):
        table.add_row(*(fmt_cell(row.get(key), key) for key, _ in cols))
    return table


def _img(path: str | Path | None, alt: str) -> str:
    if not path or not Path(path).is_file():
        return f"<p class='missing'>({html.escape(alt)}: not produced)</p>"
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'><figcaption>{html.escape(alt)}" \
           "</figcaption></figure>"


def _html_table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in cols)
    body = []
    for row in rows:
        cells = []
        for key, _ in cols:
            cls = ""
            if key == "passed" and row.get(key) is not None:
                cls = " class='pass'" if row[key] else " class='fail'"
            cells.append(f"<td{cls}>{html.escape(fmt_cell(row.get(key), key))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv_table(data: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in data.items()
    )
    return f"<table class='kv'>{rows}</table>"


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1b1f24;
background:#fff;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #e5e7eb;padding-bottom:.3rem;margin-top:2rem}
.sub{color:#57606a;margin-top:0}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.8rem 0}
th,td{border:1px solid #d0d7de;padding:.35rem .5rem;text-align:right}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
.kv th{text-align:left;width:30%}.kv td{text-align:left}
td.pass{color:#116329;font-weight:600}td.fail{color:#cf222e;font-weight:700}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:1rem}
figure{margin:0}img{max-width:100%;border:1px solid #eaeef2}figcaption{color:#57606a;font-size:.85rem}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{background:#f6f8fa;border-radius:8px;padding:.8rem 1.2rem}
.card b{display:block;font-size:1.4rem}.missing{color:#8c959f;font-style:italic}
.failures{border:2px solid #cf222e;border-radius:8px;padding:.5rem 1rem;background:#fff5f5}
.failures li{color:#cf222e}.note{color:#9a6700}
"""


def failure_lines(report: dict[str, Any]) -> list[str]:
    """One line per failed stage, then one per artifact that failed parity (with the reason)."""
    lines = [f"stage {f['stage']} failed: {f['error']}" for f in report.get("failures", [])]
    for name, detail in (report.get("parity") or {}).items():
        lines += [f"{name} failed parity: {why}" for why in detail.get("failures", [])]
    return lines


def note_lines(report: dict[str, Any]) -> list[str]:
    """Gates that passed only as inconclusive, per artifact."""
    return [f"{name}: {note}" for name, detail in (report.get("parity") or {}).items()
            for note in detail.get("notes", [])]


def _facts(report: dict[str, Any]) -> list[str]:
    """Classes, split and gate rule: what the numbers mean."""
    facts = []
    if report.get("classes"):
        facts.append(f"classes ({len(report['classes'])}): {', '.join(report['classes'][:30])}"
                     + (" ..." if len(report["classes"]) > 30 else ""))
    split = report.get("split") or {}
    if split:
        facts.append("split: " + ", ".join(f"{k} {v}" for k, v in split.items() if k != "split_file_sha256"))
    if report.get("gate"):
        facts.append(report["gate"])
    return facts


def render_html(report: dict[str, Any], plots: dict[str, str | Path | None]) -> str:
    """The whole report as one HTML page with every plot embedded."""
    summary = report.get("summary", {})
    cards = "".join(
        f"<div class='card'>{html.escape(k)}<b>{html.escape(fmt_cell(v, k))}</b></div>" for k, v in summary.items()
    )
    failures = failure_lines(report)
    failed = ("<div class='failures'><b>Failed</b><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in failures)
              + "</ul></div>") if failures else ""
    notes = "".join(f"<p class='note'>{html.escape(line)}</p>" for line in note_lines(report))
    facts = "".join(f"<p class='sub'>{html.escape(line)}</p>" for line in _facts(report))
    stages = report.get("stages", {})
    stage_rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(info.get('status', ''))}</td>"
        f"<td>{info.get('seconds', 0):.1f}</td></tr>"
        for name, info in stages.items()
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>vtool report: {html.escape(report.get('run', ''))}</title><style>{STYLE}</style></head><body>
<h1>vtool report: {html.escape(report.get('run', ''))}</h1>
<p class="sub">model <b>{html.escape(str(report.get('model', '')))}</b> on data
<b>{html.escape(str(report.get('data', '')))}</b> &middot; {html.escape(report.get('created', ''))}</p>
<div class="cards">{cards}</div>
{failed}
<h2>Artifacts</h2>
{_html_table(report.get('rows', []), columns(report.get('batch_sizes', [1])))}
{notes}{facts}
<p class="sub">Latency is the median (p50) per batch on {html.escape(str(report.get('device', 'cpu')))}, all rows
measured in one run; speedup is throughput against the first row at the largest batch; parity compares each artifact
with the original model on held-out real images ({html.escape(str(report.get('parity_data', '')))}).</p>
<div class="grid">{_img(plots.get('latency_accuracy'), 'Latency (batch 1) vs accuracy')}
{_img(plots.get('throughput'), 'Throughput at batch 32')}</div>
<h2>Training</h2>
<div class="grid">{_img(plots.get('curves'), 'Training and validation loss / accuracy')}
{_img(plots.get('confusion'), 'Confusion matrix (test split)')}</div>
<h2>Misclassified examples</h2>
{_img(plots.get('misclassified'), 'Misclassified test images (true / predicted)')}
<h2>Stages</h2>
<table><thead><tr><th>stage</th><th>status</th><th>seconds</th></tr></thead><tbody>{stage_rows}</tbody></table>
<h2>Environment</h2>
{_kv_table(report.get('env', {}))}
</body></html>
"""


def render_markdown(report: dict[str, Any], plots: dict[str, str | Path | None], out_dir: Path) -> str:
    lines = [
        f"# vtool report: {report.get('run', '')}",
        "",
        f"Model `{report.get('model')}` on data `{report.get('data')}`, {report.get('created', '')}.",
        "",
        *([f"**Failed:** {line}" for line in failure_lines(report)] + [""] if failure_lines(report) else []),
        "## Artifacts",
        "",
        markdown_rows(report.get("rows", []), columns(report.get("batch_sizes", [1]))),
        "",
        *[f"- {line}" for line in note_lines(report) + _facts(report)],
        "",
        "## Plots",
        "",
    ]
    for key, path in plots.items():
        if path and Path(path).is_file():
            shown = Path(path).relative_to(out_dir) if Path(path).is_relative_to(out_dir) else path
            lines.append(f"![{key}]({shown})")
    lines += ["", "## Stages", "", "| stage | status | seconds |", "|---|---|---|"]
    stages = report.get("stages", {})
    lines += [f"| {n} | {i.get('status', '')} | {i.get('seconds', 0):.1f} |" for n, i in stages.items()]
    lines += ["", "## Environment", "", *[f"- **{k}**: {v}" for k, v in report.get("env", {}).items()], ""]
    return "\n".join(lines)
