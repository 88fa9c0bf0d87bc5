"""vtool models: the registry."""

from __future__ import annotations

from toolchain.cli import app
from toolchain.cli.common import finish, guarded


@app.command("models")
@guarded
def models_cmd() -> None:
    """List registered models: name, parameters, input size, pretrained source."""
    from toolchain.models import count_parameters, create_model, list_models
    from toolchain.report.tables import models_view

    entries = list_models()
    params = {entry.name: count_parameters(create_model(entry.name, pretrained=False)[0]) for entry in entries}
    finish(None, models_view(entries, params))
