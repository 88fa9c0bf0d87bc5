"""Stage bookkeeping for `vtool pipeline`: skip a stage whose inputs did not change (by hash).

Each stage's record (input key, outputs, status, time) lives in <run>/pipeline.json, rewritten
atomically after every stage, so an interrupted run keeps what already succeeded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolchain.artifact import atomic_write_text

log = logging.getLogger(__name__)
STATE_FILE = "pipeline.json"


def input_key(inputs: dict[str, Any]) -> str:
    """A stable hash of what a stage depends on (configs, upstream file hashes)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StageRecord:
    name: str
    key: str
    status: str  # ok | failed | skipped (up to date)
    seconds: float
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class StageBook:
    """Runs stages in order, reusing up-to-date results recorded by a previous run."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / STATE_FILE
        self.previous: dict[str, StageRecord] = {}
        if self.path.is_file():
            try:
                raw = json.loads(self.path.read_text())
                self.previous = {name: StageRecord(**rec) for name, rec in raw.get("stages", {}).items()}
            except (json.JSONDecodeError, TypeError, KeyError):
                log.warning("ignoring unreadable %s; every stage will run", self.path)
        self.records: dict[str, StageRecord] = {}

    def run(
        self,
        name: str,
        inputs: dict[str, Any],
        work: Callable[[], dict[str, Any]],
        still_valid: Callable[[dict[str, Any]], bool] = lambda outputs: True,
    ) -> dict[str, Any]:
        """Run `work` unless the previous run's record for `name` has the same input key."""
        key = input_key(inputs)
        old = self.previous.get(name)
        if old and old.key == key and old.status in ("ok", "skipped") and still_valid(old.outputs):
            log.info("%s: up to date (inputs unchanged), skipped", name)
            self.records[name] = StageRecord(name, key, "skipped", 0.0, old.outputs)
            self.save()
            return old.outputs
        start = time.perf_counter()
        try:
            outputs = work()
        except BaseException as exc:
            self.records[name] = StageRecord(name, key, "failed", time.perf_counter() - start, {},
                                             str(exc) or type(exc).__name__)
            self.save()
            raise
        self.records[name] = StageRecord(name, key, "ok", time.perf_counter() - start, outputs)
        self.save()
        return outputs

    def summary(self) -> dict[str, dict[str, Any]]:
        return {n: {"status": r.status, "seconds": r.seconds} for n, r in self.records.items()}

    def save(self) -> None:
        merged = {**self.previous, **self.records}
        atomic_write_text(self.path, json.dumps({"stages": {n: asdict(r) for n, r in merged.items()}}, indent=2))
