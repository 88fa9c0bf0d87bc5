"""Shared CLI plumbing: the one error boundary, logging, consoles, flag parsers, and the tail every command
ends with (render -> write -> check). No heavy imports here: `vtool --help` must not load torch."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("toolchain.cli")


@dataclass
class OutputState:
    """Where this invocation's output goes: reset by the root callback, set by --quiet and --json -."""

    quiet: bool = False
    json_to_stdout: bool = False  # `--json -`: stdout carries only the JSON document; tables move to stderr


OUTPUT = OutputState()
PIPED_WIDTH = 1000  # piped or redirected results are never cut to 80 columns


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Library code logs; the CLI shows vtool's INFO lines (WARNING and up with --quiet) on stderr, never stdout,
    and hides third-party noise."""
    from rich.console import Console
    from rich.logging import RichHandler

    OUTPUT.quiet, OUTPUT.json_to_stdout = quiet, False
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    err = Console(stderr=True)
    handler: logging.Handler
    if err.is_terminal:
        handler = RichHandler(console=err, show_time=False, show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # redirected (a file, CI, a pipe): one plain line per record, never wrapped or padded
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)-8s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
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


def set_quiet(quiet: bool) -> None:
    """--quiet after the command name: results only (no progress, no INFO logs; warnings still on stderr)."""
    if quiet:
        OUTPUT.quiet = True
        logging.getLogger("toolchain").setLevel(max(logging.getLogger("toolchain").level, logging.WARNING))


def console(stderr: bool = False) -> Any:
    """The results console: stdout (stderr when `--json -` owns stdout); piped output is never cut to 80 columns."""
    from rich.console import Console

    out = Console(stderr=stderr or OUTPUT.json_to_stdout, highlight=False)
    if not out.is_terminal:
        out.width = max(out.width, PIPED_WIDTH)
    return out


def status_console() -> Any:
    """Progress, spinners and 'wrote FILE' lines: always stderr, silent with --quiet."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, quiet=OUTPUT.quiet)


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


# Parameters every command names the same way: checked before the command starts any work.
OUTPUT_FILES = {"json_path": "--json", "json_out": "--json", "markdown": "--markdown", "plot": "--plot"}
OUTPUT_DIRS = {"out": "--out"}


def check_arguments(kwargs: dict[str, Any]) -> None:
    """What every command's flags must satisfy before any long work: --threads >= 1, and every output file
    (--json, --markdown, --plot) and directory (--out) writable, a file where a file goes, a folder where a
    folder goes (a read-only or full --out must fail before training, not after)."""
    from toolchain.errors import UserInputError
    from toolchain.outputs import check_writable

    threads = kwargs.get("threads")
    if threads is not None and threads < 1:
        raise UserInputError(f"--threads must be >= 1, got {threads}; leave it out for the backend's default.")
    for name, flag in OUTPUT_FILES.items():
        if kwargs.get(name) is not None and str(kwargs[name]) != "-":  # `--json -` is stdout, not a file
            check_writable(kwargs[name], flag, directory=False)
    for name, flag in OUTPUT_DIRS.items():
        if kwargs.get(name) is not None:
            check_writable(kwargs[name], flag, directory=True)


def guarded(func: F) -> F:
    """The CLI's one error boundary: VtoolError -> one line + its exit code (3 only for a missed threshold); an
    OSError (full disk, read-only file system, no permission...) -> one line naming the file; a sys.exit() in a
    user's model code -> exit 1, never its own code; Ctrl-C -> 130 after the library's atomic writes cleaned up.
    Output paths and --threads are checked before the command starts (check_arguments)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from toolchain.errors import VtoolError, os_error_message

        try:
            check_arguments(kwargs)
            return func(*args, **kwargs)
        except VtoolError as exc:
            raise fail(str(exc), exc.exit_code, getattr(exc, "peer_lost", False)) from None
        except KeyboardInterrupt:
            raise fail("interrupted; finished artifacts were kept, nothing half-written was left.", 130) from None
        except MemoryError:
            raise fail("out of memory; try a smaller --batch-size or fewer --samples.") from None
        except OSError as exc:
            raise fail(os_error_message(exc)) from None
        except SystemExit as exc:  # only code vtool runs for the user (a model file) can get here
            raise fail(f"a model's code called sys.exit({exc.code}) while vtool was running it; a model must not "
                       "end the process (exit code 3 means a missed threshold only).") from None

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


def finish(result: Any, view: list[Any], json_path: Path | None = None, data: Any = None, out: Any = None,
           schema: str = "vtool.result/1") -> None:
    """Every command's tail: print the view, write --json (result.to_dict() unless `data`; `-` is stdout) with
    its schema id, then exit 3 when the result failed its gate (the only place a failed result becomes an exit
    code; a result may carry its own `exit_code`, e.g. a pipeline whose stage failed on bad input). A distributed
    job reports once, from rank 0."""
    from toolchain.distributed.config import is_main_process
    from toolchain.errors import ThresholdError

    if not is_main_process():  # a distributed job reports once, from rank 0
        return
    out = out or console()
    for item in view:
        out.print(item)
    if json_path is not None:
        write_json(json_path, result.to_dict() if data is None else data, schema)
    if result is not None and not result:
        error = ThresholdError(result.message())
        error.exit_code = getattr(result, "exit_code", ThresholdError.exit_code)
        raise error


def schema_id(command: str) -> str:
    """`vtool.<command>/1`: the schema id every --json document of a command starts with (README: JSON schemas)."""
    return f"vtool.{command}/1"


def write_json(path: Path | str, data: dict[str, Any], schema: str) -> None:
    """Write a --json document with its schema id first; `-` writes it to stdout (nothing else goes there)."""
    from toolchain.report import jsonable, write_result

    document = {"schema": schema, **{k: v for k, v in data.items() if k != "schema"}}
    if str(path) == "-":
        import json

        sys.stdout.write(json.dumps(jsonable(document), indent=2, default=str) + "\n")
        sys.stdout.flush()
        return
    status_console().print(f"wrote {write_result(path, document)}")


def json_target(value: Path | None) -> Path | None:
    """--json callback: `--json -` moves every table to stderr so stdout is one valid JSON document."""
    if value is not None and str(value) == "-":
        OUTPUT.json_to_stdout = True
    return value


def load_source(source: str | None, positional: str | None = None, options: Any = None,
                data: str | None = None) -> Any:
    """The model of --model (or the MODEL argument) with the shared model options, as a LoadedModel; `data` (the
    --data source) names the classes when the model does not."""
    from toolchain.errors import UserInputError
    from toolchain.sources import load_model

    if source and positional and source != positional:
        raise UserInputError(f"Two models given ('{positional}' and --model '{source}'); pass one.")
    chosen = source or positional
    if not chosen:
        raise UserInputError("No model given: pass --model SRC (a registry name, run dir, checkpoint or artifact).")
    return load_model(chosen, options=options, data=data)


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
