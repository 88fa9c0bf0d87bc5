"""Exceptions the CLI turns into one-line messages and exit codes (DESIGN.md section 3)."""

from __future__ import annotations


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
