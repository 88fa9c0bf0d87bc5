"""Training: config validation, run directories, learning, resume, overwrite protection, options."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import image_folder, one_line_error, one_torch_thread, run_cli  # noqa: F401

from toolchain.artifact import sha256_file
from toolchain.data import DataConfig
from toolchain.errors import UserInputError
from toolchain.models.checkpoint import read_checkpoint
from toolchain.sources import load_model
from toolchain.train import (
    Progress,
    TrainConfig,
    class_weights,
    find_head,
    prepare_training,
    resume_config,
    train,
)

SYNTH = DataConfig(source="synthetic", synthetic_classes=3, synthetic_per_class=20)


def _run(out, model="tiny-cnn", data=SYNTH, callback=None, **config):
    cfg = TrainConfig(**{"epochs": 1, "warmup_epochs": 0, "lr": 3e-3, **config})
    loaded, bundle = prepare_training(model, data, cfg, out)
    return train(loaded, bundle, cfg, out, progress_callback=callback)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """tiny-cnn trained 3 epochs on digits through train() (the default recipe, no warm-up)."""
    return _run(tmp_path_factory.mktemp("runs") / "tiny-digits", data=DataConfig(source="digits"), epochs=3)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"epochs": -3}, "--epochs must be a whole number >= 1, got -3"),
    ({"epochs": 0}, "--epochs"),
    ({"lr": 0.0}, "--lr must be > 0"),
    ({"optimizer": "adam"}, "Did you mean 'adamw'"),
    ({"schedule": "linear"}, "Unknown schedule 'linear'"),
    ({"label_smoothing": 1.0}, "label-smoothing"),
    ({"patience": 0}, "--patience"),
    ({"batch_size": 0}, "--batch-size"),
    ({"device": "tpu"}, "Unknown device"),
])
def test_config_validation(kwargs, match) -> None:
    with pytest.raises(UserInputError, match=match):
        TrainConfig(**kwargs)


def test_negative_epochs_cli(tmp_path) -> None:
    result = run_cli("train", "--model", "tiny-cnn", "--data", "synthetic", "--epochs", -2, "--out", tmp_path / "r")
    one_line_error(result, "--epochs must be a whole number >= 1, got -2")
    assert not (tmp_path / "r").exists()


def test_lr_schedules() -> None:
    cosine = TrainConfig(epochs=10, lr=0.1, warmup_epochs=1)
    assert cosine.lr_at(0, 10) == pytest.approx(0.01)
    assert cosine.lr_at(9, 10) == pytest.approx(0.1)
    assert cosine.lr_at(99, 10) < 1e-3
    step = TrainConfig(epochs=9, lr=0.1, schedule="step", warmup_epochs=0, optimizer="sgd")
    assert [round(step.lr_at(e * 5, 5), 6) for e in (0, 3, 6)] == [0.1, 0.01, 0.001]


def test_tiny_cnn_learns_digits_and_writes_a_complete_run(digits_run) -> None:
    out = digits_run.out_dir
    assert digits_run.metrics["test_accuracy"] > 0.6
    assert digits_run.epochs_run == 3 and len(digits_run.history) == 3
    assert {p.name for p in out.iterdir()} >= {"best.pt", "last.pt", "history.json", "curves.png", "result.json"}
    history = json.loads((out / "history.json").read_text())
    assert set(history[0]) >= {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "time_s"}
    best = read_checkpoint(out / "best.pt")
    assert tuple(best["spec"]["class_names"]) == tuple(str(i) for i in range(10))
    assert set(best) >= {"split", "data", "data_config", "config", "metrics", "epoch"}
    assert best["data_config"]["source"] == "digits" and best["config"]["epochs"] == 3
    assert best["metrics"]["test_accuracy"] == digits_run.metrics["test_accuracy"]
    loaded = load_model(str(out))  # a run dir loads as its best checkpoint
    assert loaded.spec.num_classes == 10 and loaded.info["epoch"] == digits_run.best_epoch


def test_class_names_and_count_come_from_the_data(tmp_path) -> None:
    result = _run(tmp_path / "r")
    spec = load_model(str(result.best_path)).spec
    assert spec.num_classes == 3 and spec.class_names == ("circle", "square", "triangle")


def test_input_size_override(tmp_path) -> None:
    cfg = TrainConfig(epochs=1)
    loaded, bundle = prepare_training("tiny-cnn", SYNTH, cfg, tmp_path / "r", input_size=(40, 40))
    assert loaded.spec.input_size == (40, 40)
    assert bundle.arrays("val")[0].shape[1:] == (3, 40, 40)


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path) -> None:
    straight = _run(tmp_path / "straight", epochs=2)

    def interrupt(p: Progress) -> None:
        if p.epoch_done and p.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "resumed", epochs=2, callback=interrupt)
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1
    config = resume_config(tmp_path / "resumed")
    assert config.resume and config.epochs == 2
    loaded, bundle = prepare_training(None, None, config, tmp_path / "resumed")
    resumed = train(loaded, bundle, config, tmp_path / "resumed")
    assert resumed.epochs_run == 2 and [h["epoch"] for h in resumed.history] == [1, 2]
    a = read_checkpoint(straight.last_path)["state_dict"]
    b = read_checkpoint(resumed.last_path)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserInputError, match="already finished 2 epochs"):
        train(*prepare_training(None, None, config, tmp_path / "resumed"), config, tmp_path / "resumed")


def test_resume_cli_extends_a_run(tmp_path) -> None:
    out = tmp_path / "run"
    first = run_cli("train", "--model", "tiny-cnn", "--data", "synthetic", "--epochs", 1, "--out", out)
    assert first.exit_code == 0, first.stderr
    more = run_cli("train", "--resume", "--out", out, "--epochs", 2, "--json", tmp_path / "r.json")
    assert more.exit_code == 0, more.stderr
    assert json.loads((tmp_path / "r.json").read_text())["epochs_run"] == 2
    missing = run_cli("train", "--resume", "--out", tmp_path / "nothing-here")
    one_line_error(missing, "Cannot resume")


def test_existing_run_is_never_overwritten_by_accident(tmp_path) -> None:
    out = tmp_path / "run"
    _run(out)
    before = sha256_file(out / "best.pt")
    with pytest.raises(UserInputError, match="already holds a training run"):
        _run(out)
    result = run_cli("train", "--model", "tiny-cnn", "--data", "synthetic", "--epochs", 1, "--out", out)
    one_line_error(result, "--overwrite")
    failing = [  # even with --overwrite, a run that fails its checks leaves the old one alone
        ("--epochs", "-1"),
        ("--data", "digits", "--weights", str(out / "best.pt")),  # 3-class weights for 10-class data
    ]
    for extra in failing:
        result = run_cli("train", "--model", "tiny-cnn", "--data", "synthetic", "--out", out, "--overwrite", *extra)
        assert result.exit_code == 1, result.stderr
    assert sha256_file(out / "best.pt") == before


def test_overwrite_interrupted_mid_training_keeps_the_old_run(tmp_path) -> None:
    out = tmp_path / "run"
    _run(out)
    before = sha256_file(out / "best.pt")

    def interrupt(progress) -> None:
        if progress.epoch_done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(out, callback=interrupt, epochs=3, overwrite=True)
    assert sha256_file(out / "best.pt") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging dir left behind"
    replaced = _run(out, epochs=2, overwrite=True)
    assert replaced.best_path == out / "best.pt" and replaced.epochs_run == 2
    assert sha256_file(out / "best.pt") != before


def test_class_weights_balance_rare_classes() -> None:
    weights = class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0, 1.0])


def test_class_weighted_training_on_imbalanced_folder(tmp_path) -> None:
    root = image_folder(tmp_path / "data", classes=2, per_class=30)
    for extra in sorted((root / "square").iterdir())[8:]:
        extra.unlink()  # 30 circles vs 8 squares
    result = _run(tmp_path / "run", data=DataConfig(source=str(root)), class_weighted=True, epochs=2)
    best = read_checkpoint(result.best_path)
    assert best["config"]["class_weighted"] is True and best["data"]["num_images"] == 38
    assert math.isfinite(result.history[-1]["train_loss"])


def test_freeze_backbone_trains_only_the_head(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, freeze_backbone=True, warmup_epochs=0)
    loaded, bundle = prepare_training("tiny-cnn", SYNTH, cfg, tmp_path / "r")
    before = {k: v.clone() for k, v in loaded.module.state_dict().items()}
    head = find_head(loaded.module)
    head_name = next(name for name, module in loaded.module.named_modules() if module is head)
    head_keys = {k for k in before if k.startswith(f"{head_name}.")}
    result = train(loaded, bundle, cfg, tmp_path / "r")
    after = read_checkpoint(result.last_path)["state_dict"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= head_keys


def test_freezing_a_random_backbone_warns_and_the_checkpoint_says_so(tmp_path, caplog) -> None:
    caplog.set_level("WARNING", logger="toolchain")
    result = _run(tmp_path / "random", freeze_backbone=True)
    assert "--freeze-backbone on randomly initialised weights" in caplog.text
    assert read_checkpoint(result.best_path)["pretrained"] is False
    caplog.clear()
    weights = tmp_path / "w.pt"
    torch.save(load_model(str(result.best_path)).module.state_dict(), weights)
    cfg = TrainConfig(epochs=1, warmup_epochs=0, freeze_backbone=True)
    loaded, bundle = prepare_training("tiny-cnn", SYNTH, cfg, tmp_path / "w", weights=str(weights))
    done = train(loaded, bundle, cfg, tmp_path / "w")
    assert "randomly initialised" not in caplog.text and read_checkpoint(done.best_path)["pretrained"] is True


def test_labels_and_preprocessing_flags_are_recorded_in_the_checkpoint(tmp_path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("round\nboxy\npointy\n")
    folder = image_folder(tmp_path / "shapes", classes=3, per_class=6)
    result = run_cli("train", "--model", "tiny-cnn", "--data", folder, "--labels", labels, "--mean",
                     "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--epochs", 1, "--out", tmp_path / "run",
                     "--quiet")
    assert result.exit_code == 0, result.stderr
    payload = read_checkpoint(tmp_path / "run" / "best.pt")
    assert list(payload["spec"]["class_names"]) == ["round", "boxy", "pointy"] and payload["spec"]["mean"][0] == 0.485
    assert payload["options"]["class_names"] == ["round", "boxy", "pointy"] and payload["pretrained"] is False
    one_line_error(run_cli("train", "--model", "tiny-cnn", "--data", folder, "--labels", folder / "circle" / "x",
                           "--out", tmp_path / "run2"), "Labels file")


def test_early_stopping_with_sgd_step_schedule(tmp_path) -> None:
    result = _run(tmp_path / "r", epochs=6, lr=1e-9, optimizer="sgd", schedule="step", patience=1)
    assert result.stopped_early and result.epochs_run == 2
    assert read_checkpoint(result.last_path)["config"]["optimizer"] == "sgd"


@pytest.mark.slow
def test_vit_and_resnet_train_a_step(tmp_path) -> None:
    for arch in ("tiny-vit", "tiny-resnet"):
        result = _run(tmp_path / arch, model=arch, label_smoothing=0.1, grad_clip=1.0)
        assert math.isfinite(result.history[0]["train_loss"])
