"""Live progress for long work (rich, on stderr): the training bar."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def training_bar(console: Any) -> Iterator[Callable[[Any], None]]:
    """Yield a train(progress_callback=...) that draws epoch, loss, accuracy and validation figures.

    The bar appears with the first training step, so checks that fail before training print no empty bar.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.3f} | val {task.fields[val]}"),
               TimeElapsedColumn())
    bar = Progress(*columns, console=console, transient=False)
    tasks: list[Any] = []

    def on_progress(p: Any) -> None:
        if not tasks:
            bar.start()
            tasks.append(bar.add_task("train", total=None, epoch="-", loss=0.0, acc=0.0, val="-"))
        fields = {"epoch": f"{p.epoch}/{p.epochs}", "loss": p.loss, "acc": p.accuracy}
        if p.epoch_done:
            fields["val"] = f"loss {p.val_loss:.4f} acc {p.val_accuracy:.3f}" if p.val_accuracy is not None else "-"
        bar.update(tasks[0], total=p.epochs * p.steps, completed=(p.epoch - 1) * p.steps + p.step, **fields)

    try:
        yield on_progress
    finally:
        if tasks:
            bar.stop()
