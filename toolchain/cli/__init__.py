"""`vtool`: a thin typer shell over the toolchain library. Heavy imports live inside commands."""

from __future__ import annotations

import typer

from toolchain import __version__

app = typer.Typer(
    name="vtool",
    help="Train, export, quantize, benchmark and prove parity of image classifiers (CNN, ResNet, ViT).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vtool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs and third-party warnings."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    from toolchain.cli.common import setup_logging

    setup_logging(verbose)


# Each stage registers its commands on `app` (import order = order in --help).
from toolchain.cli import stage_train, stage_export, stage_quantize, stage_bench, stage_pipeline  # noqa: F401, I001


def main() -> None:
    app()
