"""Output in one place: every result rendered and written (never measured) here.

    write.py     write_result (atomic strict JSON for every --json), write_text, jsonable
    format.py    cell formatting shared by tables, Markdown and HTML
    tables.py    rich renderables for each command's result (train, eval, predict, export, parity, quantize,
                 pipeline, models)
    bench.py     the ranked bench table, its Markdown report, --compare and --preprocess tables
    pipeline.py  the pipeline report: artifact table, self-contained HTML page, Markdown
    plots.py     matplotlib PNGs (Agg): training curves, confusion matrix, misclassified grid, bench, latency/accuracy
    progress.py  the live training progress bar

This package imports rich/matplotlib only inside the functions that draw, so library code can write results
through it cheaply.
"""

from toolchain.report.write import jsonable, write_result, write_text

__all__ = ["jsonable", "write_result", "write_text"]
