"""Shared CLI plumbing: the one error boundary, logging, consoles, flag parsers, and the tail every command
ends with (render -> write -> check). No heavy imports here: `vtool --help` must not load torch."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("toolchain.cli")


def setup_logging(verbose: bool = False) -> None:
    """Library code logs; the CLI shows vtool's INFO lines and hides third-party noise."""
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.INFO
    handler = RichHandler(show_time=False, show_path=False, rich_tracebacks=False, markup=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    from toolchain.distributed.config import is_main_process

    # a distributed job logs once: ranks other than 0 show errors only
    logging.getLogger("toolchain").setLevel(level if is_main_process() or verbose else logging.ERROR)
    if not verbose:
        for noisy in ("torch", "torchao", "onnxscript", "transformers", "timm", "onnx_ir", "root"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # torch installs its own log handlers at import (e.g. torchao's pytree deprecation notices):
        # "-torch" lowers them to errors. Set before any command imports torch.
        os.environ.setdefault("TORCH_LOGS", "-torch")


def console(stderr: bool = False, min_width: int | None = None) -> Any:
    """A rich console; piped or redirected output gets at least `min_width` columns for wide tables."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if min_width and not out.is_terminal:
        out.width = max(out.width, min_width)
    return out


def fail(message: str, code: int = 1, peer_lost: bool = False) -> typer.Exit:
    """Print a one-line error on stderr and return the Exit to raise. In a torchrun worker the line names the
    rank and is recorded for the launcher; under `vtool --nproc` the launcher alone prints it (once)."""
    from toolchain.distributed import config as dist

    first = " ".join(str(message).split())
    if code == 0:  # a worker that finished its share (WorkerDone): nothing to report
        return typer.Exit(0)
    if dist.in_torchrun():
        dist.record_error(first, code, peer_lost)
        if dist.launched_by_vtool():
            return typer.Exit(code)
        first = f"[rank {dist.rank()}] {first}"
    print(f"error: {first}", file=sys.stderr)
    return typer.Exit(code)


def guarded(func: F) -> F:
    """The CLI's error boundary: VtoolError -> one line + its exit code (3 for a missed threshold), never a
    traceback; Ctrl-C -> 130 after the library's atomic writes cleaned up."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from toolchain.errors import VtoolError

        try:
            return func(*args, **kwargs)
        except VtoolError as exc:
            raise fail(str(exc), exc.exit_code, getattr(exc, "peer_lost", False)) from None
        except KeyboardInterrupt:
            raise fail("interrupted; finished artifacts were kept, nothing half-written was left.", 130) from None
        except MemoryError:
            raise fail("out of memory; try a smaller --batch-size or fewer --samples.") from None

    return wrapper  # type: ignore[return-value]


def deprecated(old: str, new: str, old_value: Any, new_value: Any) -> Any:
    """The value of a hidden deprecated flag (with a warning) when it was given, else the new flag's."""
    if old_value is None:
        return new_value
    log.warning("%s is deprecated; use %s", old, new)
    return old_value


def outcome(call: Callable[[], Any]) -> Any:
    """Run a library stage; a missed gate that raised ThresholdError with its result attached (export,
    quantize) gives that result back, so the command renders and writes it before finish() exits 3."""
    from toolchain.errors import ThresholdError

    try:
        return call()
    except ThresholdError as exc:
        if getattr(exc, "result", None) is None:
            raise
        return exc.result


def finish(result: Any, view: list[Any], json_path: Path | None = None, data: Any = None, out: Any = None) -> None:
    """Every command's tail: print the view, write --json (result.to_dict() unless `data`), then exit 3 when
    the result failed its gate (the only place a failed result becomes an exit code)."""
    from toolchain.distributed.config import is_main_process
    from toolchain.errors import ThresholdError

    if not is_main_process():  # a distributed job reports once, from rank 0
        return
    out = out or console()
    for item in view:
        out.print(item)
    if json_path is not None:
        from toolchain.report import write_result

        write_result(json_path, result.to_dict() if data is None else data)
    if result is not None and not result:
        raise ThresholdError(result.message())


def load_source(source: str | None, positional: str | None = None, weights: str | None = None,
                num_classes: int | None = None, input_size: str | None = None, pretrained: bool | None = None) -> Any:
    """The model of --model (or the MODEL argument) with the shared model options, as a LoadedModel."""
    from toolchain.errors import UserInputError
    from toolchain.sources import load_model

    if source and positional and source != positional:
        raise UserInputError(f"Two models given ('{positional}' and --model '{source}'); pass one.")
    chosen = source or positional
    if not chosen:
        raise UserInputError("No model given: pass --model SRC (a registry name, run dir, checkpoint or artifact).")
    return load_model(chosen, weights=weights, num_classes=num_classes, input_size=parse_size(input_size),
                      pretrained=pretrained)


def parse_size(value: str | None) -> tuple[int, int] | None:
    """'224' or '224x224' -> (224, 224)."""
    if value is None:
        return None
    from toolchain.errors import UserInputError

    parts = value.lower().replace(",", "x").split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise UserInputError(f"--input-size '{value}' is not a size; expected N or HxW, e.g. 32 or 224x224.") from None
    if len(nums) == 1:
        nums *= 2
    if len(nums) != 2 or min(nums) < 1:
        raise UserInputError(f"--input-size '{value}' must be N or HxW with positive numbers.")
    return nums[0], nums[1]


def parse_int_list(value: str, flag: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32], each >= 1."""
    from toolchain.errors import UserInputError

    try:
        nums = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserInputError(f"{flag} '{value}' must be comma-separated whole numbers, e.g. 1,8,32.") from None
    if not nums or min(nums) < 1:
        raise UserInputError(f"{flag} '{value}' must list numbers >= 1.")
    return nums


def parse_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def overrides(config_cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The flags that name a field of `config_cls` and were given (not None): a config is built from these,
    so the command never restates the dataclass's fields or defaults."""
    return {k: v for k, v in values.items() if k in config_cls.__dataclass_fields__ and v is not None}
