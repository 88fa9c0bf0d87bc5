"""Writing results: one atomic, strict-JSON writer for every `--json` and result file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.artifact import atomic_write_text


def jsonable(value: Any) -> Any:
    """Strict-JSON form: non-finite floats (an identical pair has SQNR inf) become the strings 'inf'/'nan';
    numpy scalars become Python numbers, tuples lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return jsonable(value.item())
    return value


def write_result(path: str | Path, data: Any) -> Path:
    """Write `data` (a result's to_dict()) as pretty, strict JSON through a temp file and rename."""
    target = Path(path)
    atomic_write_text(target, json.dumps(jsonable(data), indent=2, default=str) + "\n")
    return target


def write_text(path: str | Path, text: str) -> Path:
    """A Markdown or HTML report, written atomically."""
    target = Path(path)
    atomic_write_text(target, text)
    return target
