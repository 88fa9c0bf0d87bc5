"""`vtool demo`: a Gradio page to try one or two models side by side (e.g. fp32 vs INT8): upload an image, see
each model's top-k with confidence and its latency for that image.

The work is in SideBySide (no gradio needed: tested in CI); build_app() only lays it out in Gradio, which is an
optional extra (`pip install 'vtool[demo]'`, in its own venv: gradio caps pillow below the pinned 13.0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.errors import MissingDependencyError, UserInputError
from toolchain.models import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Where the page listens and what it shows. `share` (a public gradio.live link) stays off unless asked."""

    port: int = 7860
    host: str = "127.0.0.1"
    share: bool = False
    top_k: int = 3
    runner: str = "auto"
    threads: int | None = None
    example: Path | None = None  # an image shown (and classified) when the page opens

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UserInputError(f"--port must be 0..65535, got {self.port}.")
        if self.top_k < 1:
            raise UserInputError(f"--top-k must be >= 1, got {self.top_k}.")
        if self.example is not None and not Path(self.example).is_file():
            raise UserInputError(f"--example '{self.example}' does not exist; pass an image file.")


def _precision(model: LoadedModel) -> str:
    return model.artifact.manifest.precision if model.artifact is not None else "fp32"


class SideBySide:
    """Open Runners for 1-2 models; classify(image) -> one answer per model: top-k, top-1 and latency."""

    def __init__(self, models: list[LoadedModel], config: DemoConfig | None = None) -> None:
        from toolchain.runners import get_runner

        if not 1 <= len(models) <= 2:
            raise UserInputError(f"vtool demo shows one or two models side by side, got {len(models)}.")
        self.config = config or DemoConfig()
        self.models = models
        first = models[0].spec
        for other in models[1:]:
            if other.spec.num_classes != first.num_classes:
                raise UserInputError(f"{models[0].name} has {first.num_classes} classes and {other.name} "
                                     f"{other.spec.num_classes}: side by side needs the same label set.")
        self.runners = [get_runner(self.config.runner, m, threads=self.config.threads) for m in models]
        for runner in self.runners:
            runner.load()
        self.titles = [f"{m.name} ({_precision(m)}, {r.name})" for m, r in zip(models, self.runners, strict=True)]

    def classify(self, image: Any) -> list[dict[str, Any]]:
        """A PIL image (or file path) through every model with its own preprocessing (one warm-up call first, so
        the latency shown is a steady one)."""
        from toolchain.bench.timing import timed_call
        from toolchain.predict import softmax
        from toolchain.preprocess import open_image, preprocess

        if image is None:
            raise UserInputError("No image: upload one first.")
        if isinstance(image, (str, Path)):
            image = open_image(image)
        answers = []
        for model, runner, title in zip(self.models, self.runners, self.titles, strict=True):
            x = preprocess([image], model.spec)
            runner.infer(x)
            holder: dict[str, Any] = {}
            seconds = timed_call(lambda r=runner, h=holder, x=x: h.update(logits=r.infer(x)), runner.synchronize)
            probs = softmax(holder["logits"])[0]
            labels = model.spec.labels
            order = probs.argsort()[::-1][:self.config.top_k]
            top = [{"label": labels[i], "confidence": float(probs[i])} for i in order]
            answers.append({"model": title, "top": top, "top1": top[0]["label"], "latency_ms": seconds * 1000})
        return answers

    def close(self) -> None:
        for runner in self.runners:
            runner.close()


def summary_markdown(answers: list[dict[str, Any]]) -> str:
    """The line under the results: each model's top-1 and latency, and whether the models agree."""
    parts = [f"**{a['model']}**: top-1 **{a['top1']}** ({a['top'][0]['confidence']:.1%}), {a['latency_ms']:.2f} ms"
             for a in answers]
    if len(answers) == 2:
        same = answers[0]["top1"] == answers[1]["top1"]
        parts.append("top-1 **agrees**" if same else "top-1 **differs**")
    return "  \n".join(parts)


def build_app(side: SideBySide) -> Any:
    """The Gradio Blocks page: image in; per model a Label (top-k bars) and its latency; one summary line."""
    try:
        import gradio as gr
    except ImportError:
        raise MissingDependencyError("vtool demo needs gradio: pip install 'vtool[demo]' in its own venv (gradio caps "
                                     "pillow below vtool's pinned 13.0; see the README).") from None

    def run(image: Any) -> list[Any]:
        if image is None:
            return [None] * len(side.models) + ["Upload an image to classify it."]
        answers = side.classify(image)
        labels = [{t["label"]: t["confidence"] for t in a["top"]} for a in answers]
        return [*labels, summary_markdown(answers)]

    # The example is classified here, not on page load: the page then opens with its answers already in place
    # (no round trip, and nothing for a headless browser to wait on).
    initial = run(str(side.config.example)) if side.config.example is not None else [None] * (len(side.models) + 1)

    with gr.Blocks(title="vtool demo") as app:
        gr.Markdown("# vtool demo\nUpload an image: every model answers with its own preprocessing. "
                    "Latency is one warm call on this machine's CPU, not a benchmark (use `vtool bench`).")
        with gr.Row():
            image = gr.Image(type="pil", label="image", value=str(side.config.example) if side.config.example
                             else None, elem_id="vtool-image")
            outputs = [gr.Label(value=initial[i], num_top_classes=side.config.top_k, label=title,
                                elem_id=f"vtool-model-{i}") for i, title in enumerate(side.titles)]
        summary = gr.Markdown(value=initial[-1] or "", elem_id="vtool-summary")
        button = gr.Button("Classify", variant="primary")
        button.click(run, inputs=image, outputs=[*outputs, summary], api_name="classify")
        image.upload(run, inputs=image, outputs=[*outputs, summary], api_name=False)
    return app


def launch(sources: list[LoadedModel | str], config: DemoConfig | None = None, block: bool = True) -> Any:
    """Load the models, build the page and serve it on config.host:config.port (share off unless asked).
    With block=False it returns (app, side) while the server runs in the background (tests)."""
    from toolchain.sources import as_loaded

    config = config or DemoConfig()
    side = SideBySide([as_loaded(s) for s in sources], config)
    app = build_app(side)
    log.info("vtool demo on http://%s:%d (share %s)", config.host, config.port, "on" if config.share else "off")
    app.launch(server_name=config.host, server_port=config.port or None, share=config.share,
               prevent_thread_lock=not block, show_error=True, quiet=True)
    return app, side
