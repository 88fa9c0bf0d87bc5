"""A user's own model class: `path/to/file.py:ClassName` (+ --weights). Importing their file runs their code,
which they asked for; nothing else of theirs is ever unpickled."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from toolchain.errors import UserInputError, first_line
from toolchain.models.loaded import LoadedModel
from toolchain.spec import ModelSpec


def parse_user_ref(source: str) -> tuple[Path, str] | None:
    """`file.py:ClassName` -> (path, class name); anything else -> None."""
    if ".py:" not in source:
        return None
    path, _, cls = source.rpartition(":")
    return Path(path), cls


def instantiate_user_class(path: str | Path, cls_name: str, num_classes: int, input_size: tuple[int, int]) -> Any:
    """Import the file once (cached under a stable module name) and build the class for this head and size."""
    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"Model file '{file}' does not exist; expected path/to/file.py:ClassName.")
    mod_name = f"vtool_user_{hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:10]}"
    module = sys.modules.get(mod_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(mod_name, file)
        if spec is None or spec.loader is None:
            raise UserInputError(f"Cannot import '{file}' as a Python module.")
        module = importlib.util.module_from_spec(spec)
        with user_code(f"Importing '{file}'"):
            spec.loader.exec_module(module)
        sys.modules[mod_name] = module
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise UserInputError(f"'{file}' has no class '{cls_name}'.")
    if not isinstance(cls, type):
        raise UserInputError(f"'{file}:{cls_name}' is a {type(cls).__name__}, not a class; expected an nn.Module "
                             "subclass.")
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs: dict[str, Any] = {}
    if "num_classes" in params:
        kwargs["num_classes"] = num_classes
    if "input_size" in params:
        kwargs["input_size"] = tuple(input_size)
    with user_code(f"Constructing {cls_name} from '{file}'"):
        instance = cls(**kwargs)
    if not callable(getattr(instance, "state_dict", None)) or not callable(instance):
        raise UserInputError(f"{cls_name} from '{file}' is not a torch nn.Module; subclass torch.nn.Module.")
    return instance


@contextmanager
def user_code(what: str) -> Iterator[None]:
    """Run a user's own code: whatever it raises, and a sys.exit() in it, becomes one line naming `what`."""
    try:
        yield
    except (KeyboardInterrupt, MemoryError):
        raise
    except SystemExit as exc:
        raise UserInputError(f"{what} called sys.exit({exc.code}); a model file must define classes, not end the "
                             "process.") from None
    except Exception as exc:  # noqa: BLE001 - user code can raise anything: report it, never a traceback
        raise UserInputError(f"{what} failed: {first_line(exc, 200, typed=True)}") from None


def load_user_module(source: str, num_classes: int | None, input_size: tuple[int, int] | None,
                     class_names: tuple[str, ...] = ()) -> LoadedModel:
    path, cls_name = parse_user_ref(source)  # type: ignore[misc]
    n = num_classes or (len(class_names) if class_names else 10)
    size = tuple(input_size or (32, 32))
    module = instantiate_user_class(path, cls_name, n, size)
    spec = ModelSpec(
        architecture=f"{path.stem}:{cls_name}", num_classes=n, input_size=size, class_names=class_names,
        build={"kind": "user", "path": str(path.resolve()), "class": cls_name},
    )
    return LoadedModel(spec, f"user:{source}", module=module.eval())
