"""vtool models: the registry, listed from static facts (no network is built: it takes well under 2 s)."""

from __future__ import annotations

from toolchain.cli import app
from toolchain.cli.common import finish, guarded, schema_id
from toolchain.cli.options import Json, output_options


@app.command("models")
@guarded
@output_options
def models_cmd(json_path: Json = None) -> None:
    """List registered models: name, parameters, input size, pretrained source."""
    from toolchain.models import list_models
    from toolchain.report.tables import models_view

    entries = list_models()
    data = {"models": [{"name": e.name, "family": e.family, "params": e.params, "input_size": list(e.input_size),
                        "num_classes": e.default_num_classes, "mean": list(e.mean), "std": list(e.std),
                        "interpolation": e.interpolation, "crop_pct": e.crop_pct,
                        "pretrained_source": e.pretrained_source, "description": e.description} for e in entries]}
    finish(None, models_view(entries), json_path, data=data, schema=schema_id("models"))
