"""pipeline/state.py: a stage re-runs only when its inputs (hashed) or its outputs changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolchain.pipeline.state import STATE_FILE, StageBook, input_key


def test_input_key_is_stable_and_order_free() -> None:
    assert input_key({"a": 1, "b": [1, 2]}) == input_key({"b": [1, 2], "a": 1})
    assert input_key({"a": 1}) != input_key({"a": 2})
    assert len(input_key({"p": Path("x")})) == 16  # non-JSON values hash through str()


def test_unchanged_inputs_skip_and_reuse_the_outputs(tmp_path: Path) -> None:
    calls: list[int] = []

    def work() -> dict:
        calls.append(1)
        return {"value": len(calls)}

    first = StageBook(tmp_path)
    assert first.run("s", {"k": 1}, work) == {"value": 1}
    assert first.summary()["s"]["status"] == "ok"
    again = StageBook(tmp_path)
    assert again.run("s", {"k": 1}, work) == {"value": 1} and len(calls) == 1
    assert again.summary()["s"] == {"status": "skipped", "seconds": 0.0}
    changed = StageBook(tmp_path)
    assert changed.run("s", {"k": 2}, work) == {"value": 2}
    gone = StageBook(tmp_path)  # same inputs, but the outputs are no longer valid (e.g. a file was deleted)
    assert gone.run("s", {"k": 2}, work, still_valid=lambda outputs: False) == {"value": 3}


def test_a_failed_stage_is_recorded_and_runs_again(tmp_path: Path) -> None:
    book = StageBook(tmp_path)

    def boom() -> dict:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        book.run("s", {"k": 1}, boom)
    saved = json.loads((tmp_path / STATE_FILE).read_text())["stages"]["s"]
    assert saved["status"] == "failed" and saved["error"] == "disk full"
    assert StageBook(tmp_path).run("s", {"k": 1}, lambda: {"ok": True}) == {"ok": True}


def test_records_of_other_stages_survive_and_an_unreadable_file_reruns(tmp_path: Path) -> None:
    StageBook(tmp_path).run("a", {}, lambda: {"a": 1})
    StageBook(tmp_path).run("b", {}, lambda: {"b": 1})
    assert set(json.loads((tmp_path / STATE_FILE).read_text())["stages"]) == {"a", "b"}
    (tmp_path / STATE_FILE).write_text("{broken")
    book = StageBook(tmp_path)
    assert book.previous == {} and book.run("a", {}, lambda: {"a": 2}) == {"a": 2}
