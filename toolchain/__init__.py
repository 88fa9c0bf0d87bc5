"""vtool: train, export, quantize, benchmark and prove parity of image classifiers.

The public API, one call per stage (each `vtool` command is a thin shell over one of these)::

    from toolchain import train, evaluate, export_model, quantize, benchmark, check_parity, run_pipeline
    from toolchain import load_model, TrainConfig, EvalConfig, ExportConfig, QuantConfig, BenchConfig

Names resolve lazily (module __getattr__), so `import toolchain` and `vtool --help` import no torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "train": "toolchain.train", "TrainConfig": "toolchain.train", "TrainResult": "toolchain.train",
    "evaluate": "toolchain.evaluate", "EvalConfig": "toolchain.evaluate", "EvalResult": "toolchain.evaluate",
    "export_model": "toolchain.export", "ExportConfig": "toolchain.export", "ExportResult": "toolchain.export",
    "quantize": "toolchain.quantize", "QuantConfig": "toolchain.quantize", "QuantResult": "toolchain.quantize",
    "benchmark": "toolchain.bench", "BenchConfig": "toolchain.bench", "BenchResult": "toolchain.bench",
    "check_parity": "toolchain.parity", "ParityConfig": "toolchain.parity", "ParityResult": "toolchain.parity",
    "run_pipeline": "toolchain.pipeline", "PipelineConfig": "toolchain.pipeline",
    "PipelineResult": "toolchain.pipeline",
    "load_model": "toolchain.sources", "LoadedModel": "toolchain.models", "ModelSpec": "toolchain.spec",
    "DataConfig": "toolchain.data", "Thresholds": "toolchain.compare", "CompareResult": "toolchain.compare",
    "get_runner": "toolchain.runners", "VtoolError": "toolchain.errors", "ThresholdError": "toolchain.errors",
    "explain": "toolchain.explain", "ExplainConfig": "toolchain.explain", "explanation_parity": "toolchain.explain",
    "check_data": "toolchain.datacheck", "CheckConfig": "toolchain.datacheck",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'toolchain' has no attribute '{name}'")
    module = importlib.import_module(_API[name])
    if module.__name__ == f"{__name__}.{name}":  # train, evaluate, quantize: the stage's own callable module
        return module
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


class _StageModule(types.ModuleType):
    """A stage module that is also its stage function: `toolchain.train` is both the package and train()."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)


def callable_module(name: str, function: Callable[..., Any]) -> None:
    """Make module `name` callable as `function`.

    `from toolchain import train` finds the submodule toolchain.train whenever it was imported before (Python
    binds a submodule as its package's attribute), so train, evaluate and quantize, whose modules share
    their names, are made callable: the import gives the same answer in every order.
    """
    module = sys.modules[name]
    module.__class__ = _StageModule
    module.__wrapped__ = function  # inspect.signature() and help() follow it to the function
