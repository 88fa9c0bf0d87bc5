"""Acceptance (issue 11): a new user's own nn.Module (its own default num_classes=6), trained in plain PyTorch on
their own split of a 6-class ImageFolder with ImageNet normalisation and saved with torch.save(state_dict), goes
through `vtool pipeline --model mycnn.py:MyCNN --weights w.pt --data DIR --config cfg.json` with the right class
names in the report and in predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_torch_thread, run_cli  # noqa: F401

from toolchain.data import generate_synthetic
from toolchain.spec import IMAGENET_MEAN, IMAGENET_STD

MYCNN = '''
import torch
from torch import nn


class MyCNN(nn.Module):
    def __init__(self, num_classes: int = 6):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Linear(16 * 16, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))
'''


def _load(path: Path) -> torch.Tensor:
    """The user's own preprocessing: RGB, [0, 1], ImageNet mean/std (no vtool involved)."""
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(pixels).permute(2, 0, 1)
    return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


@pytest.fixture(scope="module")
def user_project(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("newuser")
    data = generate_synthetic(root / "photos", classes=6, per_class=24, size=32, seed=3)
    classes = sorted(p.name for p in data.iterdir())
    rng = np.random.default_rng(0)
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for name in classes:
        files = sorted(f"{name}/{p.name}" for p in (data / name).iterdir())
        rng.shuffle(files)
        split["test"] += files[:5]
        split["val"] += files[5:8]
        split["train"] += files[8:]
    (root / "split.json").write_text(json.dumps(split))
    (root / "mycnn.py").write_text(MYCNN)
    (root / "cfg.json").write_text(json.dumps({"input_size": 32, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                                               "interpolation": "bilinear", "crop_pct": 1.0}))
    # the user's own training script: plain PyTorch, their split, their normalisation
    import importlib.util

    spec = importlib.util.spec_from_file_location("mycnn_user", root / "mycnn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.MyCNN()
    x = torch.stack([_load(data / f) for f in split["train"]])
    y = torch.tensor([classes.index(f.split("/")[0]) for f in split["train"]])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    torch.save(model.state_dict(), root / "w.pt")
    return {"root": root, "data": data, "classes": classes, "split": split}


def test_own_model_own_data_own_preprocessing_through_the_pipeline(user_project: dict) -> None:
    root, data, classes = user_project["root"], user_project["data"], user_project["classes"]
    run = root / "run"
    result = run_cli("pipeline", "--model", f"{root / 'mycnn.py'}:MyCNN", "--weights", root / "w.pt",
                     "--data", data, "--split-file", root / "split.json", "--config", root / "cfg.json",
                     "--formats", "onnx", "--quantize", "ptq", "--batch-size", 1, "--bench-seconds", 0.05,
                     "--out", run, "--json", root / "pipeline.json")
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["classes"] == classes  # the folder names, not 0..5, and not 10 classes
    assert report["split"]["split_by"] == "split file" and not report["failures"]
    assert report["summary"]["accuracy"] > 0.6  # scored on the user's own test part, with their normalisation
    assert json.loads((root / "pipeline.json").read_text())["schema"] == "vtool.pipeline/1"
    html = (run / "report.html").read_text()
    assert f"classes (6): {', '.join(classes)}" in html
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 30 and list(metrics["per_class"]) == classes
    for artifact in ("onnx", "int8-ptq"):
        manifest = json.loads((run / artifact / "manifest.json").read_text())
        assert manifest["spec"]["mean"] == list(IMAGENET_MEAN) and manifest["spec"]["class_names"] == classes
        assert manifest["spec"]["num_classes"] == 6
        assert manifest["source"]["data_config"]["split_file"] == str(root / "split.json")
        assert manifest["source"]["options"]["config"] == str(root / "cfg.json")

    test_images = [data / f for f in user_project["split"]["test"]]
    args = [a for path in test_images for a in ("--image", path)]
    predicted = run_cli("predict", run / "int8-ptq", *args, "--top-k", 1, "--json", "-")
    assert predicted.exit_code == 0, predicted.stderr
    answer = json.loads(predicted.stdout)
    assert answer["schema"] == "vtool.predict/1" and answer["classes"] == classes
    labels = [p["top"][0]["label"] for p in answer["predictions"]]
    assert set(labels) <= set(classes)
    truth = [Path(p["image"]).parent.name for p in answer["predictions"]]
    assert np.mean([a == b for a, b in zip(labels, truth, strict=True)]) > 0.6


def test_eval_and_parity_take_the_same_flags(user_project: dict, tmp_path: Path) -> None:
    """`vtool eval` and `vtool parity` with the user's class + --weights: 6 classes, their split, named classes."""
    root, data = user_project["root"], user_project["data"]
    model = f"{root / 'mycnn.py'}:MyCNN"
    flags = ("--weights", root / "w.pt", "--config", root / "cfg.json", "--data", data,
             "--split-file", root / "split.json")
    scored = run_cli("eval", "--model", model, *flags, "--json", "-")
    assert scored.exit_code == 0, scored.stderr
    metrics = json.loads(scored.stdout)
    assert metrics["n"] == 30 and metrics["class_names"] == user_project["classes"]
    checked = run_cli("parity", model, model, *flags, "--cand-weights", root / "w.pt", "--split", "test",
                      "--json", "-")
    assert checked.exit_code == 0, checked.stderr
    parity = json.loads(checked.stdout)
    assert parity["n"] == 30 and parity["agreement"] == 1.0 and parity["flips"] == 0
