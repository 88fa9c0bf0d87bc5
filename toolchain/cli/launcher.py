"""`--nproc N` for train, eval, parity and quantize --mode qat: re-run the same command in N torchrun workers.

The command line is rebuilt from the flags the user gave (click records where each value came from),
minus --nproc, and handed to toolchain.distributed.launch; the workers run the ordinary command and the
stages detect torchrun's environment. Rank 0 prints the results; a failed worker is one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

Nproc = Annotated[int | None, typer.Option(
    "--nproc", help="Worker processes on this machine (torchrun, DDP; gloo on CPU, nccl on CUDA). Multi-node: "
                    "torchrun --nnodes N --rdzv-endpoint HOST:PORT --nproc-per-node K -m toolchain CMD ...",
    show_default=False)]
Workers = Annotated[int, typer.Option(
    "--workers", help="DataLoader processes decoding images (0: in the main process; pinned memory on CUDA).")]


def relaunch_args(ctx: typer.Context, drop: tuple[str, ...] = ("nproc",)) -> list[str]:
    """The command line that produced `ctx` (root options, command path, given arguments and flags), without
    the parameters named in `drop`: what each worker runs. Only values that came from the command line or
    the environment are repeated; defaults stay defaults."""
    root = ctx.find_root()
    args = [f"--{flag}" for flag in ("verbose", "quiet") if root.params.get(flag)]
    path, node = [], ctx
    while node.parent is not None:
        path.append(node.info_name or "")
        node = node.parent
    args += reversed(path)
    positional: list[str] = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name) if param.name else None
        if param.name in drop or getattr(source, "name", "") not in ("COMMANDLINE", "ENVIRONMENT"):
            continue
        value = ctx.params[param.name]
        if param.param_type_name == "argument":
            positional += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        elif getattr(param, "is_flag", False):
            if value:
                args.append(param.opts[0])
            elif param.secondary_opts:
                args.append(param.secondary_opts[0])
        elif getattr(param, "multiple", False):
            for item in value:
                args += [param.opts[0], str(item)]
        else:
            args += [param.opts[0], str(value)]
    return args + positional


def launch_if_asked(ctx: typer.Context, nproc: int | None, device: str = "auto", threads: int | None = None,
                    on_failure: Callable[[Any], str] | None = None) -> bool:
    """Start `nproc` workers running this command and wait (True), or return False to run it in this process
    (no --nproc, --nproc 1, or already inside a torchrun worker). `on_failure(error)` may add a hint (e.g.
    where the last good checkpoint is) to the one-line failure."""
    if nproc is None:
        return False
    from toolchain.distributed import config as dist
    from toolchain.errors import UserInputError

    config = dist.DistributedConfig(nproc=nproc, device=device if device in dist.DEVICES else "auto",
                                    threads=threads)
    if dist.in_torchrun():
        raise UserInputError("--nproc was given inside a torchrun worker; torchrun already started the "
                             "processes: drop --nproc (or run vtool without torchrun).")
    if nproc == 1:
        return False
    from toolchain.distributed.launch import LaunchError, launch

    try:
        launch(relaunch_args(ctx), config)
    except LaunchError as exc:
        hint = on_failure(exc) if on_failure else ""
        if hint:
            raise LaunchError(f"{exc} {hint}", exc.rank, exc.worker_exit_code) from None
        raise
    return True
