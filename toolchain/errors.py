"""Exceptions the CLI turns into one-line messages and exit codes (DESIGN.md section 3)."""

from __future__ import annotations

import errno


class VtoolError(Exception):
    """Base for every error vtool reports to a user: one line, no traceback."""

    exit_code: int = 1


class UserInputError(VtoolError):
    """Bad input from the user: a missing file, an unknown name, a wrong shape."""


class MissingDependencyError(VtoolError):
    """An optional package, runtime or device is not available here."""


class ArtifactError(VtoolError):
    """An artifact directory or model file is missing, corrupt or of an unknown version."""


class ExportError(VtoolError):
    """A model could not be exported (names the operator when known)."""


class ThresholdError(VtoolError):
    """A quality gate was not met (parity, accuracy drop, regression): exit code 3 for CI."""

    exit_code = 3


def first_line(exc: BaseException, limit: int = 200, *, first_only: bool = False, typed: bool = False) -> str:
    """A third-party exception as one line for a user message: its whole text folded onto one line, or only its
    first line (`first_only`, for long multi-line texts), optionally prefixed with the exception type."""
    text = str(exc).strip()
    text = text.splitlines()[0] if first_only and text else " ".join(text.split())
    if typed:
        return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__
    return (text or type(exc).__name__)[:limit]


def os_error_message(exc: OSError) -> str:
    """An OSError as one line naming the file and what to do (the CLI's error boundary uses it)."""
    where = exc.filename or ""
    if exc.filename2:
        where = f"{exc.filename} -> {exc.filename2}"
    hints = {
        errno.ENOSPC: "free some space or write elsewhere",
        errno.EDQUOT: "free some space (disk quota) or write elsewhere",
        errno.EROFS: "the file system is read-only; choose a writable place",
        errno.EACCES: "check the permissions or choose another place",
        errno.EPERM: "check the permissions or choose another place",
        errno.EISDIR: "it is a directory; pass a file path",
        errno.ENOTDIR: "a part of the path is a file, not a directory",
        errno.ENOENT: "check the path",
        errno.EMFILE: "too many open files; raise `ulimit -n`",
    }
    reason = exc.strerror or type(exc).__name__
    hint = hints.get(exc.errno or -1, "check the path and the disk")
    return f"{reason}: '{where}'; {hint}." if where else f"{reason} ({type(exc).__name__}); {hint}."


def did_you_mean(value: str, choices: list[str] | tuple[str, ...]) -> str:
    """A ' Did you mean X?' suffix when a close match exists, else ''."""
    import difflib

    match = difflib.get_close_matches(value, list(choices), n=1)
    return f" Did you mean '{match[0]}'?" if match else ""


def renamed_field(config: object, old: str, new: str, value: object) -> None:
    """A config's deprecated keyword (an InitVar named `old`): warn once and set the field `new` when given."""
    if value is not None:
        import warnings

        cls = type(config).__name__
        warnings.warn(f"{cls}({old}=...) is deprecated; use {new}=...", DeprecationWarning, stacklevel=4)
        setattr(config, new, value)


def check_choice(what: str, value: str, choices: list[str] | tuple[str, ...]) -> None:
    """Raise UserInputError listing the allowed values when `value` is not one of them."""
    if value not in choices:
        raise UserInputError(
            f"Unknown {what} '{value}': expected one of {', '.join(choices)}.{did_you_mean(value, choices)}"
        )
