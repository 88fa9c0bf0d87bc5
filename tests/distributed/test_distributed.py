"""Distributed runs (torchrun, DDP over gloo on the CPU): real 2-process jobs on digits with tiny-cnn, plus the
bad inputs (--nproc 0, more processes than cores, a rank that dies) and the pieces that need no processes.

Every multi-process case is a `vtool ... --nproc 2` subprocess with a timeout: each costs two Python+torch
start-ups, so the set stays small (the QAT case is marked slow)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import one_line_error, one_torch_thread, run_cli  # noqa: F401

import toolchain
from toolchain.data import DataConfig
from toolchain.distributed import DistributedConfig
from toolchain.distributed.config import FAULT_ENV
from toolchain.distributed.launch import failure_error
from toolchain.distributed.runtime import Dist
from toolchain.errors import ThresholdError, UserInputError
from toolchain.models.checkpoint import read_checkpoint
from toolchain.train import TrainConfig, train

ROOT = Path(toolchain.__file__).resolve().parents[1]
TIMEOUT_S = 420
RECIPE = ["--model", "tiny-cnn", "--data", "digits", "--lr", "0.005", "--warmup-epochs", "0"]


def vtool(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m toolchain ARGS` in a fresh process (workers are real processes: no CliRunner here)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_ERROR_FILE", FAULT_ENV):
        if name not in (env or {}):
            full_env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "toolchain", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=TIMEOUT_S, cwd=ROOT)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------ no processes needed


def test_nproc_must_be_positive() -> None:
    with pytest.raises(UserInputError, match="--nproc must be a whole number >= 1"):
        DistributedConfig(nproc=0)
    assert DistributedConfig(nproc=2, threads=3).threads_per_rank() == 3
    assert DistributedConfig(nproc=1).threads_per_rank() == (os.cpu_count() or 1)


@pytest.mark.parametrize("command", [
    ["train", "--model", "tiny-cnn", "--out", "unused-run"],
    ["eval", "tiny-cnn", "--data", "digits"],
    ["parity", "tiny-cnn", "tiny-cnn", "--data", "digits"],
    ["quantize", "--model", "tiny-cnn", "--mode", "qat"],
])
def test_nproc_zero_is_a_one_line_error(command: list[str]) -> None:
    one_line_error(run_cli(*command, "--nproc", 0), "--nproc must be a whole number >= 1")


def test_nproc_needs_qat_in_quantize() -> None:
    one_line_error(run_cli("quantize", "--model", "tiny-cnn", "--mode", "ptq", "--nproc", 2), "--mode qat")


def test_more_processes_than_cores_warns(caplog: pytest.LogCaptureFixture) -> None:
    cores = os.cpu_count() or 1
    with caplog.at_level(logging.WARNING, logger="toolchain"):
        DistributedConfig(nproc=cores + 1, device="cpu")
    assert f"more worker processes than this machine has CPU cores ({cores})" in caplog.text


def test_nproc_relaunches_the_same_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--nproc hands torchrun the flags that were given (not the defaults), minus --nproc, and warns when the
    processes outnumber the cores."""
    seen: dict = {}
    monkeypatch.setattr("toolchain.distributed.launch.launch",
                        lambda argv, config: seen.update(argv=argv, nproc=config.nproc))
    result = run_cli("-v", "train", "--model", "tiny-cnn", "--out", tmp_path / "r", "--epochs", 2,
                     "--no-augment", "--nproc", 64)
    assert result.exit_code == 0, result.stderr
    assert seen["nproc"] == 64
    assert seen["argv"] == ["--verbose", "train", "--model", "tiny-cnn", "--out", str(tmp_path / "r"), "--epochs",
                            "2", "--no-augment"]
    assert "more worker processes than this machine has CPU cores" in result.stdout + result.stderr


def test_shards_cover_every_batch_once_in_order() -> None:
    indices = list(range(23))
    shards = [Dist(rank=r, world_size=3).shard_batches(indices, 4) for r in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2]
    rejoined = Dist(world_size=3).unshard(shards, total_batches=6)
    assert [i for batch in rejoined for i in batch] == indices


def _failure(rank_exit: int, data: dict | None = None, timestamp: int = 0) -> SimpleNamespace:
    return SimpleNamespace(exitcode=rank_exit, error_file_data=data or {}, timestamp=timestamp,
                           signal_name=lambda: "SIGTERM" if rank_exit == -15 else "SIGKILL")


def test_failure_names_the_root_cause_rank() -> None:
    lost = {"rank": 0, "message": "rank 0 of 2: lost contact with another worker", "peer_lost": True}
    error = failure_error({0: _failure(1, lost, 1), 1: _failure(13, timestamp=2)}, 2)
    assert "rank 1 of 2 died with exit code 13" in str(error)
    error = failure_error({0: _failure(-15), 1: _failure(-9)}, 2)
    assert "rank 1 of 2 was killed by SIGKILL" in str(error)
    mine = {"rank": 1, "message": "Training diverged at epoch 3", "exit_code": 1}
    assert str(failure_error({0: _failure(-15), 1: _failure(1, mine)}, 2)) == (
        "Training diverged at epoch 3 [rank 1 of 2]")
    gate = {"rank": 0, "message": "parity failed for x", "exit_code": 3}
    assert isinstance(failure_error({0: _failure(3, gate)}, 2), ThresholdError)


def test_worker_errors_name_their_rank(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A torchrun worker's one-line error says which rank it is and lands in torchrun's error file."""
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    result = run_cli("eval", "no-such-model")
    line = one_line_error(result, "Unknown model")
    assert line.startswith("error: [rank 1] ")
    assert json.loads(error_file.read_text())["rank"] == 1


def test_sync_bn_needs_cuda(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("toolchain.train.loop.current", lambda device="cpu": Dist(rank=0, world_size=2))
    with pytest.raises(UserInputError, match="--sync-bn needs CUDA"):
        train("tiny-cnn", DataConfig(source="synthetic", synthetic_classes=3, synthetic_per_class=5),
              TrainConfig(epochs=1, sync_bn=True, device="cpu"), tmp_path / "r")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ real 2-process jobs (gloo)


def test_two_processes_train_like_one_and_resume_after_a_dead_rank(tmp_path: Path) -> None:
    """2 gloo workers on digits, rank 1 killed as epoch 2 starts: the job fails in one line naming the rank and
    the epoch-1 checkpoint stays intact; --resume finishes the run (one run dir written by rank 0, rank-0 logs
    and table only) with the accuracy of one process trained on the same recipe (global batch 64 in both)."""
    out = tmp_path / "ddp"
    killed = vtool("train", *RECIPE, "--epochs", 3, "--out", out, "--nproc", 2, env={FAULT_ENV: "1:2"})
    assert killed.returncode == 1, killed.stderr[-3000:]
    errors = error_lines(killed)
    assert len(errors) == 1 and "rank 1 of 2 died with exit code 13" in errors[0], killed.stderr[-3000:]
    assert "Traceback" not in killed.stderr and "last.pt (epoch 1)" in errors[0]
    assert read_checkpoint(out / "last.pt")["epoch"] == 1  # the last good checkpoint, intact
    assert len(json.loads((out / "history.json").read_text())) == 1

    proc = vtool("train", "--resume", "--out", out, "--nproc", 2, "--json", tmp_path / "ddp.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "curves.png", "history.json", "last.pt",
                                                     "result.json"]
    assert proc.stdout.count("trained ->") == 1
    logs = proc.stdout.splitlines() + proc.stderr.splitlines()
    assert sum("epoch 3/3" in line and "val_acc" in line for line in logs) == 1  # rank 0 logs, rank 1 does not
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert ddp["world_size"] == 2 and [row["epoch"] for row in ddp["history"]] == [1, 2, 3]
    assert read_checkpoint(out / "best.pt")["distributed"]["world_size"] == 2

    single = train("tiny-cnn", DataConfig(source="digits"),
                   TrainConfig(epochs=3, lr=0.005, warmup_epochs=0), tmp_path / "single")
    one, two = single.metrics["test_accuracy"], ddp["metrics"]["test_accuracy"]
    print(f"digits tiny-cnn 3 epochs: test accuracy 1 process {one:.4f}, 2 processes {two:.4f}")
    assert two > 0.6 and abs(one - two) < 0.12, (one, two)


def test_sharded_parity_equals_one_process(trained_tiny_cnn: Path, tmp_path: Path) -> None:
    """parity over 2 processes (each every other batch, images decoded in a DataLoader worker) gives exactly the
    single-process counts; a damaged copy makes them non-trivial, and its failed gate is exit 3 from the
    launcher too, in one line."""
    from helpers import damaged_checkpoint

    from toolchain.parity import ParityConfig, check_parity

    damaged = damaged_checkpoint(trained_tiny_cnn, tmp_path / "damaged.pt", scale=0.3)
    single = check_parity(str(trained_tiny_cnn), str(damaged), ParityConfig(record=False))
    proc = vtool("parity", trained_tiny_cnn, damaged, "--nproc", 2, "--no-record", "--workers", 1,
                 "--json", tmp_path / "p.json")
    sharded = json.loads((tmp_path / "p.json").read_text())
    for key in ("n", "top1_ref", "top1_cand", "top5_ref", "top5_cand", "agreement", "flips_per_class"):
        assert sharded[key] == single.metrics[key], key
    assert 0 < sharded["agreement"] < 0.99 and not single.passed
    assert proc.returncode == 3 and len(error_lines(proc)) == 1 and "parity failed" in proc.stderr
    assert proc.stdout.count("parity:") == 1  # rank 0's table only


@pytest.mark.slow
def test_sharded_eval_equals_one_process(trained_tiny_cnn: Path, tmp_path: Path) -> None:
    from toolchain.evaluate import EvalConfig, evaluate

    single = evaluate(str(trained_tiny_cnn), None, EvalConfig(split="val"))
    proc = vtool("eval", trained_tiny_cnn, "--split", "val", "--nproc", 2, "--json", tmp_path / "e.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = json.loads((tmp_path / "e.json").read_text())
    assert sharded["n"] == single.n and sharded["confusion_matrix"] == single.confusion_matrix
    assert sharded["misclassified"] == single.misclassified and proc.stdout.count("per class") == 1


@pytest.mark.slow
def test_torchrun_runs_the_module_entry(trained_tiny_cnn: Path, tmp_path: Path) -> None:
    """The documented entry: `torchrun --nproc-per-node 2 -m toolchain eval ...` (no vtool parent)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "toolchain", "eval", str(trained_tiny_cnn), "--json", str(tmp_path / "e.json")],
                          capture_output=True, text=True, env=env, timeout=TIMEOUT_S, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "e.json").read_text())["n"] > 0 and proc.stdout.count("per class") == 1


@pytest.mark.slow
def test_qat_over_two_processes(trained_tiny_cnn: Path, tmp_path: Path) -> None:
    """QAT fine-tunes the torchao PT2E graph in DDP; rank 0 alone converts, checks and writes the artifact."""
    proc = vtool("quantize", "--model", trained_tiny_cnn, "--mode", "qat", "--epochs", 2, "--nproc", 2,
                 "--no-speed", "--out", tmp_path / "qat", "--json", tmp_path / "q.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "q.json").read_text())
    assert (tmp_path / "qat" / "model.onnx").is_file() and result["qat"]["epochs"] == 2
    assert proc.stdout.count("quantize qat") == 1


def test_more_workers_than_gpus_train_on_the_cpu_or_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen on a 1-GPU machine: --nproc 2 picked nccl and rank 1 died on torch.cuda.set_device(1)."""
    import torch

    from toolchain.distributed import runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert DistributedConfig(nproc=2).resolved_device() == "cpu"
    assert DistributedConfig(nproc=2).resolved_backend() == "gloo"
    assert DistributedConfig(nproc=1, device="cuda").resolved_device() == "cuda"
    with pytest.raises(UserInputError, match="needs one GPU per worker and this machine has 1"):
        DistributedConfig(nproc=2, device="cuda").resolved_device()
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(runtime, "_CURRENT", None)
    with pytest.raises(runtime.DistributedError, match="needs one GPU per worker and this machine has 1"):
        runtime.current("cuda")
