"""Peers suite: vtool vs ONNX Runtime's quantizer vs NNCF on real models (on demand only; see conftest.py).

    pytest benchmarks/test_peers.py --benchmark-only -s           # all three models, ~1 h on 2 busy cores
    pytest --benchmark-only -k "peers and vit" -s                 # one model

Each model is one case: its benchmark time is the whole case (quantize with every tool, judge, time);
the table is printed (-s shows it) and the figures go to benchmark.extra_info and to
$VTOOL_PEERS_OUT/peers-<model>.json (default exported/peers). Speed is reported, never asserted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from peers.cases import MODELS, VIT_ONNX
from peers.report import footnotes, rich_table, write_json
from peers.run import Options, environment, run_case

pytestmark = pytest.mark.peers

WORKDIR = Path(os.environ.get("VTOOL_PEERS_OUT", "exported/peers"))


@pytest.mark.parametrize("model", MODELS)
def test_peers(benchmark: Any, model: str) -> None:
    """Quantize `model` with every tool, print the table; asserts sanity only (fp32 self-agreement, a vtool model)."""
    from rich.console import Console

    if model == "vit-tiny-digits" and not (VIT_ONNX / "manifest.json").exists():
        pytest.skip(f"no trained digits ViT artifact at {VIT_ONNX} (set VTOOL_PEERS_VIT_ONNX)")
    options = Options(workdir=WORKDIR)
    env = environment(options)
    case = benchmark.pedantic(run_case, args=(model, options), rounds=1, iterations=1)
    write_json({"env": env, "cases": [case]}, WORKDIR / f"peers-{model}.json")
    console = Console(width=250)
    console.print(rich_table(case, env))
    for line in footnotes(case):
        console.print(f"  {line}", highlight=False)
    benchmark.group = "peers"
    benchmark.extra_info.update({"model": model, "cpu_flags": env["cpu_flags"], "load_avg": case["load_avg"],
                                 "checks": case["checks"], "rows": [_compact(r) for r in case["rows"]]})
    reference = next(r for r in case["rows"] if r["key"] == "fp32")
    assert reference["accuracy"]["onnxruntime"]["agreement"] == 1.0
    assert any(r["key"].startswith("vtool") and r["path"] for r in case["rows"]), "vtool produced no model"


def _compact(row: dict[str, Any]) -> dict[str, Any]:
    """The figures of one row without the bulky per-tool details (those are in the JSON file)."""
    return {"tool": row["tool"], "note": row["note"], "layers": (row.get("layers") or {}).get("label"),
            "accuracy": row["accuracy"], "speed": row["speed"]}
