"""Compare two bench results (`vtool bench --compare old.json new.json`): per-entry change and regressions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolchain.bench.result import entry_key, entry_label
from toolchain.errors import UserInputError


@dataclass
class Comparison:
    rows: list[dict[str, Any]]
    max_regression: float
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "regression"]

    def to_dict(self) -> dict[str, Any]:
        return {"max_regression": self.max_regression, "rows": self.rows, "regressions": len(self.regressions),
                "notes": self.notes}

    @property
    def passed(self) -> bool:
        """No entry slowed down more than `max_regression` (`vtool bench --compare` exits 3 otherwise)."""
        return not self.regressions

    def __bool__(self) -> bool:
        return self.passed

    def message(self) -> str:
        if self.passed:
            return f"no regression beyond {self.max_regression:.0%} in {len(self.rows)} entries"
        worst = max(self.regressions, key=lambda r: r["change"])
        return (f"{len(self.regressions)} of {len(self.rows)} entries regressed more than "
                f"{self.max_regression:.0%} in p50 latency (worst: {worst['label']} {worst['change']:+.1%}).")


def _env_notes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    notes = []
    old_cpu, new_cpu = old.get("cpu", {}), new.get("cpu", {})
    for key in ("model", "usable_cpus"):
        if old_cpu.get(key) != new_cpu.get(key):
            notes.append(f"cpu {key} differs: {old_cpu.get(key)} -> {new_cpu.get(key)}")
    old_v, new_v = old.get("versions", {}), new.get("versions", {})
    for lib in sorted(set(old_v) | set(new_v)):
        if old_v.get(lib) != new_v.get(lib):
            notes.append(f"{lib} {old_v.get(lib)} -> {new_v.get(lib)}")
    return notes


def compare_results(old: dict[str, Any], new: dict[str, Any], max_regression: float = 0.1) -> Comparison:
    """Match entries by (model, runner, batch size, concurrency, device); change = new p50 / old p50 - 1."""
    if not 0 <= max_regression:
        raise UserInputError(f"--max-regression must be >= 0, got {max_regression}; e.g. 0.1 for 10%.")
    old_entries = {entry_key(e): e for e in old["entries"]}
    new_entries = {entry_key(e): e for e in new["entries"]}
    rows = []
    for key in list(old_entries) + [k for k in new_entries if k not in old_entries]:
        before, after = old_entries.get(key), new_entries.get(key)
        label = entry_label(before or after)  # type: ignore[arg-type]
        if before is None or after is None:
            rows.append({"label": label, "status": "added" if before is None else "removed", "change": None,
                         "old_p50_ms": before and before["latency_ms"]["p50"],
                         "new_p50_ms": after and after["latency_ms"]["p50"]})
            continue
        old_p50, new_p50 = float(before["latency_ms"]["p50"]), float(after["latency_ms"]["p50"])
        change = new_p50 / old_p50 - 1 if old_p50 > 0 else 0.0
        status = "regression" if change > max_regression else "faster" if change < -max_regression else "same"
        rows.append({"label": label, "status": status, "change": round(change, 4), "old_p50_ms": old_p50,
                     "new_p50_ms": new_p50, "old_throughput_ips": before.get("throughput_ips"),
                     "new_throughput_ips": after.get("throughput_ips"),
                     "noisy": bool(before.get("high_cv") or after.get("high_cv"))})
    if not any(r["change"] is not None for r in rows):
        raise UserInputError("The two bench results share no (model, runner, batch size) entry; nothing to compare.")
    notes = _env_notes(old.get("env", {}), new.get("env", {}))
    return Comparison(rows, max_regression, notes)
