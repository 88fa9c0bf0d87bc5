"""vtool demo: DemoConfig -> toolchain.demo.launch (a Gradio page, one or two models side by side)."""

from __future__ import annotations

from pathlib import Path

import typer

from toolchain.cli import app
from toolchain.cli.common import guarded, load_source
from toolchain.cli.options import Runner, Threads


@app.command("demo")
@guarded
def demo_cmd(
    artifact: str = typer.Argument(..., help="The model to show: artifact dir, run dir, checkpoint, registry name."),
    artifact2: str = typer.Argument(None, help="A second model side by side (e.g. the INT8 artifact)."),
    port: int = typer.Option(7860, "--port", help="Port to serve the page on (127.0.0.1)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    share: bool = typer.Option(False, "--share/--no-share", help="Also open a public gradio.live link."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="Labels shown per model."),
    example: Path = typer.Option(None, "--example", help="An image shown (and classified) when the page opens."),
    backend: Runner = "auto",
    threads: Threads = None,
) -> None:
    """A Gradio page: upload an image, see each model's top-k with confidence and latency side by side."""
    from toolchain.demo import DemoConfig, launch

    config = DemoConfig(port=port, host=host, share=share, top_k=top_k, runner=backend, threads=threads,
                        example=example)
    models = [load_source(artifact)] + ([load_source(artifact2)] if artifact2 else [])
    launch(models, config)
