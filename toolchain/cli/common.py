"""Shared CLI plumbing: the error boundary, logging, and flag parsers. No heavy imports here."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])


def setup_logging(verbose: bool = False) -> None:
    """Library code logs; the CLI shows vtool's INFO lines and hides third-party noise."""
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.INFO
    handler = RichHandler(show_time=False, show_path=False, rich_tracebacks=False, markup=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("toolchain").setLevel(level)
    if not verbose:
        for noisy in ("torch", "torchao", "onnxscript", "transformers", "timm", "onnx_ir", "root"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # torch installs its own log handlers at import (e.g. torchao's pytree deprecation notices):
        # "-torch" lowers them to errors. Set before any command imports torch.
        os.environ.setdefault("TORCH_LOGS", "-torch")


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error on stderr and return the Exit to raise."""
    first = " ".join(str(message).split())
    print(f"error: {first}", file=sys.stderr)
    return typer.Exit(code)


def guarded(func: F) -> F:
    """Error boundary for a command: VtoolError -> one line + its exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from toolchain.errors import VtoolError

        try:
            return func(*args, **kwargs)
        except VtoolError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted; finished artifacts were kept, nothing half-written was left.", 130) from None
        except MemoryError:
            raise fail("out of memory; try a smaller --batch-size or fewer --samples.") from None

    return wrapper  # type: ignore[return-value]


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
