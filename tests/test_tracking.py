"""--track mlflow: runs read back through MLflow's own client; tracking off is a no-op; clear one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import one_line_error, run_cli

from toolchain.tracking import Tracker, bench_metrics, default_uri, flatten, tracking


def test_tracking_off_is_a_noop(tmp_path):
    with tracking(None, "run", tmp_path) as tracker:
        assert type(tracker) is Tracker and not tracker.enabled
        tracker.log_params({"a": 1})
        tracker.log_metrics({"loss": 0.1}, step=1)
        tracker.log_artifact(tmp_path)
    assert not (tmp_path.parent / "mlruns").exists()


def test_flatten_and_default_store(tmp_path):
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": "[1, 2]", "d": None}
    assert default_uri(tmp_path / "out") == (tmp_path / "mlruns").as_uri()
    entry = {"model": "m", "runner": "onnxruntime", "batch_size": 8, "latency_ms": {"p50": 1.5}, "throughput_ips": 9.0}
    assert bench_metrics([entry]) == {"m/onnxruntime/b8/p50_ms": 1.5, "m/onnxruntime/b8/throughput_ips": 9.0}


def test_unknown_tracker_and_missing_mlflow(tmp_path, monkeypatch):
    one_line_error(run_cli("bench", "tiny-cnn", "--iterations", "2", "--track", "wandb"), "unknown tracker")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError, as when it is not installed
    error = one_line_error(run_cli("train", "--model", "tiny-cnn", "--data", "synthetic", "--epochs", "1", "--out",
                                   tmp_path / "run", "--track", "mlflow"), "vtool[track]")
    assert "pip install" in error and not (tmp_path / "run").exists()


def test_train_run_reads_back_through_mlflow(tmp_path):
    """Acceptance: params, per-epoch metrics and artifacts of `vtool train --track mlflow`, read by MlflowClient."""
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    out = tmp_path / "runs" / "cnn"
    result = run_cli("train", "--model", "tiny-cnn", "--data", "synthetic", "--epochs", "2", "--out", out,
                     "--track", "mlflow", "--json", tmp_path / "train.json")
    assert result.exit_code == 0, result.stderr
    uri = (tmp_path / "runs" / "mlruns").as_uri()
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("vtool").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "cnn"
    assert run.data.params["model"] == "tiny-cnn" and run.data.params["train.epochs"] == "2"
    assert run.data.params["data.source"] == "synthetic" and run.data.tags["vtool.command"] == "train"
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]
    assert run.data.metrics["test_accuracy"] == pytest.approx(json.loads((tmp_path / "train.json").read_text())
                                                              ["metrics"]["test_accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert {"run/history.json", "run/curves.png", "run/best.pt"} <= artifacts


def test_bench_run_records_latency(tmp_path, trained_tiny_cnn):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    uri = (tmp_path / "store").as_uri()
    result = run_cli("bench", trained_tiny_cnn, "--backend", "torch", "--iterations", "3", "--warmup", "0",
                     "--warmup-iterations", "1", "--json", tmp_path / "b.json", "--track", "mlflow", "--track-uri", uri)
    assert result.exit_code == 0, result.stderr
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("vtool").experiment_id])[0]
    latency = [k for k in run.data.metrics if k.endswith("/torch/b1/p50_ms")]
    assert latency and run.data.metrics[latency[0]] > 0
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["b.json"]
    assert Path(tmp_path / "store").is_dir()
