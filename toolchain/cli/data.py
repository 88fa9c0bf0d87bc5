"""vtool data generate: the seeded synthetic shapes set as an ImageFolder."""

from __future__ import annotations

from pathlib import Path

import typer

from toolchain.cli import app
from toolchain.cli.common import guarded, status_console
from toolchain.cli.options import output_options

data_app = typer.Typer(help="Data utilities (generate the synthetic ImageFolder set).", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("generate")
@guarded
@output_options
def data_generate(
    dest: Path = typer.Argument(..., metavar="OUT", show_default=False,
                                help="Directory to write (ImageFolder layout: one sub-folder per class)."),
    classes: int = typer.Option(4, help="Number of shape classes (2-8)."),
    per_class: int = typer.Option(60, help="Images per class."),
    size: int = typer.Option(32, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Random seed (same seed, same images)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a folder this command generated before."),
) -> None:
    """Write the seeded synthetic shapes dataset as PNG files in ImageFolder layout."""
    from toolchain.data import DataConfig, generate_synthetic

    DataConfig(source="synthetic", synthetic_classes=classes, synthetic_per_class=per_class)  # validates the counts
    root = generate_synthetic(dest, classes, per_class, size, seed, overwrite=overwrite)
    status_console().print(f"wrote {classes * per_class} images in {classes} class folders under {root}")
