"""vtool parity: ParityConfig -> toolchain.parity.check_parity -> table -> --json -> exit 3 when it failed."""

from __future__ import annotations

from typing import Annotated

import typer

from toolchain.cli import app
from toolchain.cli.common import deprecated, finish, guarded
from toolchain.cli.launcher import Nproc, Workers, launch_if_asked
from toolchain.cli.options import Data, Device, Json, Split, Threads

Part = Annotated[str | None, typer.Option("--part", hidden=True, help="Deprecated: use --split.")]


@app.command("parity")
@guarded
def parity_cmd(
    ctx: typer.Context,
    reference: str = typer.Argument(..., help="The model to match: checkpoint, run dir, registry name, artifact."),
    candidate: str = typer.Argument(..., help="The model to check: artifact dir, model file, checkpoint..."),
    data: Data = None,
    max_drop: float = typer.Option(0.01, "--max-drop", help="Max top-1 accuracy drop (0.01 = 1 point)."),
    min_agreement: float = typer.Option(0.99, "--min-agreement", help="Min share of images with the same top-1."),
    max_abs_diff: float = typer.Option(None, "--max-abs-diff", help="Also gate on the largest logit difference."),
    limit: int = typer.Option(None, "--limit", help="Use at most N images (stratified over classes)."),
    split: Split = "val",
    part: Part = None,
    backend_ref: str = typer.Option("auto", "--backend-ref", help="Runner for the reference [default: auto]."),
    backend_cand: str = typer.Option("auto", "--backend-cand", help="Runner for the candidate [default: auto]."),
    device: Device = "cpu",
    threads: Threads = None,
    nproc: Nproc = None,
    workers: Workers = 0,
    record: bool = typer.Option(True, "--record/--no-record", help="Append the result to the candidate manifest."),
    json_path: Json = None,
) -> None:
    """Check that CANDIDATE answers like REFERENCE on the same real images; exit 3 when it does not.

    --nproc N shards the images over N processes; rank 0 gathers the logits, so the counts equal one process's."""
    from toolchain.parity import ParityConfig, check_parity
    from toolchain.report.tables import parity_view

    config = ParityConfig(data=data, max_drop=max_drop, min_agreement=min_agreement, max_abs_diff=max_abs_diff,
                          limit=limit, split=deprecated("--part", "--split", part, split), backend_ref=backend_ref,
                          backend_cand=backend_cand, device=device, threads=threads, workers=workers, record=record)
    if launch_if_asked(ctx, nproc, device, threads):
        return
    result = check_parity(reference, candidate, config)
    finish(result, parity_view(result), json_path)
