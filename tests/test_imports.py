"""Every toolchain module imports on its own in a fresh interpreter (no import cycle), and the public API
resolves lazily from `toolchain` without importing torch."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import toolchain

# every module but `python -m toolchain.cli`'s entry script (importing it runs vtool)
MODULES = sorted(m.name for m in pkgutil.walk_packages(toolchain.__path__, "toolchain.")
                 if m.name != "toolchain.cli.__main__")
PUBLIC = ("train", "evaluate", "export_model", "quantize", "benchmark", "check_parity", "run_pipeline", "load_model")


def _import_alone(module: str) -> tuple[str, int, str]:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    return module, done.returncode, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


def test_every_module_imports_alone() -> None:
    assert len(MODULES) > 60 and "toolchain.models.registry" in MODULES and "toolchain.cli.__main__" not in MODULES
    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [(m, err) for m, code, err in pool.map(_import_alone, MODULES) if code != 0]
    assert not failures, failures


def test_the_registry_is_a_leaf() -> None:
    """models/registry.py imports no other vtool model module (cnn/zoo/hf register into it, never the reverse)."""
    import ast

    import toolchain.models.registry as registry

    tree = ast.parse(open(registry.__file__).read())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {m for m in imported if m.startswith("toolchain")} <= {"toolchain.errors", "toolchain.spec"}


@pytest.mark.parametrize("order", ["api-first", "module-first"])
def test_public_api_is_lazy_and_the_same_in_any_import_order(order: str) -> None:
    first = "import toolchain.train, toolchain.quantize, toolchain.evaluate; " if order == "module-first" else ""
    code = (f"import sys; {first}from toolchain import {', '.join(PUBLIC)}, TrainConfig, QuantConfig, Thresholds; "
            "import inspect; "
            "assert all(callable(f) for f in (train, evaluate, quantize, export_model, benchmark, check_parity)); "
            "assert list(inspect.signature(train).parameters)[:3] == ['source', 'data', 'config']; "
            "assert list(inspect.signature(quantize).parameters)[:3] == ['model', 'data', 'config']; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_unknown_public_name() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        toolchain.nope  # noqa: B018
    assert set(PUBLIC) <= set(dir(toolchain))
