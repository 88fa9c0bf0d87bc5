"""Checking what a model answers: a logits tensor of shape (N, num_classes), nothing else.

A model that returns a dict, raises in forward() or gives 4 logits while its spec (or --num-classes)
says 10 would otherwise run as a "10-class" model or crash deep in a metric with an IndexError. Eager
models are probed once at load with a zero batch; every Runner checks each answer it returns.
"""

from __future__ import annotations

from typing import Any

from toolchain.errors import UserInputError, first_line
from toolchain.spec import ModelSpec


def check_logits(out: Any, spec: ModelSpec, what: str) -> None:
    """Raise a one-line UserInputError unless `out` is a 2-D (N, spec.num_classes) array or tensor."""
    shape = getattr(out, "shape", None)
    if shape is None or not hasattr(out, "dtype"):
        kind = type(out).__name__
        hint = " (return out['logits'] or out.logits)" if isinstance(out, dict) or hasattr(out, "logits") else ""
        raise UserInputError(f"{what} returned a {kind}, expected a logits tensor of shape (N, {spec.num_classes}); "
                             f"make forward() return the logits{hint}.")
    shape = tuple(int(d) for d in shape)
    if len(shape) != 2:
        raise UserInputError(f"{what} returned shape {shape}, expected logits of shape (N, {spec.num_classes}); "
                             "vtool runs image classifiers whose forward() returns one row of scores per image.")
    if shape[1] != spec.num_classes:
        raise UserInputError(f"{what} outputs {shape[1]} logits but is declared {spec.num_classes}-class; pass "
                             f"--num-classes {shape[1]} (or give the model a {spec.num_classes}-class head).")


def call_module(module: Any, x: Any, what: str) -> Any:
    """module(x), with anything the model's own code raises (or a sys.exit in it) as one line naming `what`."""
    try:
        return module(x)
    except (KeyboardInterrupt, MemoryError, UserInputError):
        raise
    except SystemExit as exc:
        raise UserInputError(f"{what}: forward() called sys.exit({exc.code}); a model must return logits, not "
                             "end the process.") from None
    except Exception as exc:  # noqa: BLE001 - user code can raise anything: report it, never a traceback
        shape = tuple(x.shape)
        images = f"{shape[1]}-channel {shape[2]}x{shape[3]} images" if len(shape) == 4 else f"shape {shape}"
        raise UserInputError(f"{what} cannot read {images}: forward() raised "
                             f"{first_line(exc, 160, first_only=True, typed=True)}; fix the model, or pass the "
                             "--input-size it expects.") from None


def probe_module(module: Any, spec: ModelSpec, what: str) -> None:
    """One forward pass of a zero image batch (eval mode, no gradients) through an eager model, checked."""
    import torch

    try:
        param = next(iter(module.parameters()))
        device, dtype = param.device, (param.dtype if param.is_floating_point() else torch.float32)
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    training = getattr(module, "training", False)
    x = torch.zeros(spec.input_shape(1), device=device, dtype=dtype)
    try:
        if training:
            module.eval()
        with torch.no_grad():
            out = call_module(module, x, what)
    finally:
        if training:
            module.train()
    check_logits(out, spec, what)
