"""vtool data check (duplicates, leakage, balance, odd files) and vtool data generate (the synthetic set)."""

from __future__ import annotations

from pathlib import Path

import typer

from toolchain.cli import app
from toolchain.cli.common import finish, guarded, schema_id, status_console
from toolchain.cli.options import Json, output_options

data_app = typer.Typer(help="Data utilities: check a dataset's hygiene, generate the synthetic set.",
                       no_args_is_help=True)
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


@data_app.command("check")
@guarded
@output_options
def data_check(
    source: str = typer.Argument(..., help="An ImageFolder dir (or one with train/ val/ test/ folders), digits or "
                                 "synthetic."),
    near: int = typer.Option(5, "--near", help="Near duplicate: dHash and pHash both within N of 64 bits."),
    min_side: int = typer.Option(16, "--min-side", help="Flag images smaller than this (pixels)."),
    seed: int = typer.Option(0, "--seed", help="Seed of vtool's split (folders without train/val/test)."),
    png: Path = typer.Option(None, "--png", help="Write class balance and size plots to this PNG."),
    strict: bool = typer.Option(False, "--strict", help="Exit 3 on a duplicate across splits or an unreadable file."),
    json_path: Json = None,
) -> None:
    """Exact and near duplicates within and across splits, class balance, corrupt/odd files, sizes and modes."""
    from toolchain.datacheck import CheckConfig, check_data
    from toolchain.report.datacheck import check_plot, check_view

    config = CheckConfig(near=near, min_side=min_side, seed=seed, strict=strict)
    result = check_data(source, config)
    if png is not None:
        check_plot(result, png)
    finish(result, check_view(result, config.max_listed), json_path, schema=schema_id("data-check"))
