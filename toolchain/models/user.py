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


def user_class(path: str | Path, cls_name: str) -> Any:
    """Import the file once (cached under a stable module name) and return the class."""
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
    return cls


def constructor_defaults(cls: Any) -> dict[str, Any]:
    """The class's own defaults for num_classes and input_size (None: it has no default or no such argument);
    'takes_num_classes' / 'takes_input_size' say whether it accepts them at all."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    out: dict[str, Any] = {}
    for name in ("num_classes", "input_size"):
        param = params.get(name)
        out[f"takes_{name}"] = param is not None
        out[name] = None if param is None or param.default is inspect.Parameter.empty else param.default
    return out


def instantiate_user_class(path: str | Path, cls_name: str, num_classes: int | None,
                           input_size: tuple[int, int] | None) -> Any:
    """Build the class, passing num_classes / input_size only when it takes them and they are known (otherwise
    its own defaults apply)."""
    cls = user_class(path, cls_name)
    defaults = constructor_defaults(cls)
    kwargs: dict[str, Any] = {}
    if defaults["takes_num_classes"] and num_classes is not None:
        kwargs["num_classes"] = num_classes
    if defaults["takes_input_size"] and input_size is not None:
        kwargs["input_size"] = tuple(input_size)
    with user_code(f"Constructing {cls_name} from '{Path(path)}'"):
        instance = cls(**kwargs)
    if not callable(getattr(instance, "state_dict", None)) or not callable(instance):
        raise UserInputError(f"{cls_name} from '{Path(path)}' is not a torch nn.Module; subclass torch.nn.Module.")
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


def output_classes(module: Any, channels: int, input_size: tuple[int, int]) -> int:
    """How many logits the module returns for one image (a class that takes no num_classes says it this way)."""
    import torch

    from toolchain.models.probe import call_module

    with torch.no_grad():
        out = call_module(module.eval(), torch.zeros(1, channels, *input_size), type(module).__name__)
    shape = tuple(getattr(out, "shape", ()))
    if len(shape) != 2:
        raise UserInputError(f"{type(module).__name__} returned {shape or type(out).__name__}; vtool needs logits of "
                             "shape (batch, classes).")
    return int(shape[1])


def load_user_module(source: str, num_classes: int | None, input_size: tuple[int, int] | None,
                     class_names: tuple[str, ...] = (), channels: int = 3) -> LoadedModel:
    """`file.py:Class` built for a class count the caller resolved (None: the class's own default, else the
    count its forward returns) and an input size (None: the class's own default, else 32x32). The loader probes
    the result (toolchain.models.probe): its logits must match the count."""
    path, cls_name = parse_user_ref(source)  # type: ignore[misc]
    defaults = constructor_defaults(user_class(path, cls_name))
    size = input_size or defaults["input_size"] or (32, 32)
    size = (size, size) if isinstance(size, int) else tuple(size)
    n = num_classes if num_classes is not None else defaults["num_classes"]
    if n is None and defaults["takes_num_classes"]:
        raise UserInputError(f"{cls_name} needs num_classes and has no default: pass --num-classes N (or --labels, "
                             "--weights or --data so vtool can tell).")
    module = instantiate_user_class(path, cls_name, n, size)
    if n is None:
        n = output_classes(module, channels, size)
    spec = ModelSpec(
        architecture=f"{path.stem}:{cls_name}", num_classes=n, input_size=size, channels=channels,
        mean=(0.5,) * channels, std=(0.5,) * channels, class_names=class_names,
        build={"kind": "user", "path": str(path.resolve()), "class": cls_name},
    )
    return LoadedModel(spec, f"user:{source}", module=module.eval())
