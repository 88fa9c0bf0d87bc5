"""A user's own model class: `path/to/file.py:ClassName` (+ --weights). Importing their file runs their code,
which they asked for; nothing else of theirs is ever unpickled."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from toolchain.errors import UserInputError
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
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's own code failed to import
            raise UserInputError(f"Importing '{file}' failed: {type(exc).__name__}: {exc}") from None
        sys.modules[mod_name] = module
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise UserInputError(f"'{file}' has no class '{cls_name}'.")
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "num_classes" in params:
        kwargs["num_classes"] = num_classes
    if "input_size" in params:
        kwargs["input_size"] = tuple(input_size)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise UserInputError(f"Cannot construct {cls_name} from '{file}': {exc}.") from None


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
