"""`vtool`: a thin typer shell over the toolchain library. One module per command (cli/<command>.py), each
body: build the config -> call the library -> render (toolchain.report) -> write --json -> exit 3 on a failed
gate. Heavy imports live inside the commands, so `vtool --help` never imports torch."""

from __future__ import annotations

import importlib

import typer

from toolchain import __version__

app = typer.Typer(
    name="vtool",
    help="Train, export, quantize, benchmark and prove parity of image classifiers (CNN, ResNet, ViT). Results "
         "(tables, --json -) go to stdout; logs, warnings and progress go to stderr.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module registers its command on `app` when imported; this order is the order in --help.
COMMANDS = ("models", "data", "train", "eval", "predict", "export", "parity", "quantize", "bench", "pipeline")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vtool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs and third-party warnings."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Results only: no progress or INFO logs (warnings and "
                                                          "errors still go to stderr)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    from toolchain.cli.common import setup_logging

    setup_logging(verbose, quiet)


for _command in COMMANDS:
    importlib.import_module(f"toolchain.cli.{_command}")


def main() -> None:
    app()
