"""vtool parity: ParityConfig -> toolchain.parity.check_parity -> table -> --json -> exit 3 when it failed.

The shared model flags describe the REFERENCE (`vtool parity mycnn.py:MyCNN exported/int8 --weights w.pt`); a
candidate that needs weights takes --cand-weights. A candidate without a recorded spec (a bare .onnx file, a
file.py:Class) borrows the reference's: class count, input size, preprocessing and class names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolchain.cli import app
from toolchain.cli.common import deprecated, finish, guarded, schema_id
from toolchain.cli.launcher import Nproc, Workers, launch_if_asked
from toolchain.cli.options import (
    Data,
    Device,
    Gate,
    Json,
    Split,
    SplitFile,
    TestData,
    Threads,
    model_options,
    output_options,
)
from toolchain.models.config import ModelOptions

Part = Annotated[str | None, typer.Option("--part", hidden=True, help="Deprecated: use --split.")]


@app.command("parity")
@guarded
@output_options
@model_options
def parity_cmd(
    ctx: typer.Context,
    reference: str = typer.Argument(..., help="The model to match: checkpoint, run dir, registry name, artifact, "
                                              "file.py:Class (+ --weights)."),
    candidate: str = typer.Argument(..., help="The model to check: artifact dir, model file, checkpoint..."),
    data: Data = None,
    max_drop: float = typer.Option(0.01, "--max-drop", help="Max top-1 accuracy drop (0.01 = 1 point)."),
    min_agreement: float = typer.Option(0.99, "--min-agreement", help="Min share of images with the same top-1."),
    max_abs_diff: float = typer.Option(None, "--max-abs-diff", help="Also gate on the largest logit difference."),
    gate: Gate = "ci",
    limit: int = typer.Option(None, "--limit", help="Use at most N images (stratified over classes)."),
    split: Split = None,
    split_file: SplitFile = None,
    test_data: TestData = None,
    part: Part = None,
    backend_ref: str = typer.Option("auto", "--backend-ref", help="Runner for the reference [default: auto]."),
    backend_cand: str = typer.Option("auto", "--backend-cand", help="Runner for the candidate [default: auto]."),
    cand_weights: Path = typer.Option(None, "--cand-weights", show_default=False,
                                      help="Weights for a candidate given as a registry name or file.py:Class."),
    device: Device = "cpu",
    threads: Threads = None,
    nproc: Nproc = None,
    workers: Workers = 0,
    record: bool = typer.Option(True, "--record/--no-record", help="Append the result to the candidate manifest."),
    explain: bool = typer.Option(False, "--explain", help="Also compare heatmaps: does the candidate look at the "
                                 "same pixels? (Spearman and top-region IoU per image)"),
    explain_samples: int = typer.Option(16, "--explain-samples", help="Images for --explain (evenly spaced)."),
    explain_method: str = typer.Option("occlusion", "--explain-method", help="occlusion (any artifact), or "
                                       "gradcam / gradcam++ when both models are torch models."),
    explain_png: Path = typer.Option(None, "--explain-png", help="Write the worst --explain pairs side by side here."),
    json_path: Json = None,
    options: ModelOptions | None = None,
) -> None:
    """Check that CANDIDATE answers like REFERENCE on the same real images; exit 3 when it does not.

    Default split: val of the reference's recorded data, test with --test-data. --nproc N shards the images over N
    processes; rank 0 gathers the logits, so the counts equal one process's.
    """
    from dataclasses import replace

    from toolchain.parity import ParityConfig, check_parity
    from toolchain.report.tables import parity_view
    from toolchain.sources import load_model

    explain_cfg = None
    if explain:
        from toolchain.explain.agree import ExplainParityConfig

        explain_cfg = ExplainParityConfig(samples=explain_samples, method=explain_method, backend_ref=backend_ref,
                                          backend_cand=backend_cand, device=device, threads=threads)
    split = deprecated("--part", "--split", part, split) or ("test" if test_data else "val")
    config = ParityConfig(data=data, max_drop=max_drop, min_agreement=min_agreement, max_abs_diff=max_abs_diff,
                          limit=limit, split=split, backend_ref=backend_ref, backend_cand=backend_cand,
                          device=device, threads=threads, workers=workers, record=record, gate=gate,
                          split_file=str(split_file) if split_file else None,
                          test_data=str(test_data) if test_data else None, explain=explain_cfg)
    if launch_if_asked(ctx, nproc, device, threads):
        return
    options = options or ModelOptions()
    names_from = data or (str(test_data) if test_data else None)
    ref = load_model(reference, options=options, data=names_from)
    # the candidate gets its own weights; whatever it does not record it borrows from the reference (`like`)
    cand_options = replace(options, weights=str(cand_weights) if cand_weights else None, num_classes=None,
                           input_size=None, class_names=None, config=None)
    cand = load_model(candidate, options=cand_options, data=names_from, like=ref.spec)
    result = check_parity(ref, cand, config)
    if explain_png is not None and result.explanation is not None:
        from toolchain.explain.figures import pairs_figure

        ex = result.explanation
        pairs_figure(ex.worst_pairs, ex.reference, ex.candidate, explain_png, ex.method)
    finish(result, parity_view(result), json_path, schema=schema_id("parity"))
