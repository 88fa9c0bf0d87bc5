"""Shared fixtures: tiny registered models (< 50k params), seeded data, trained checkpoints."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from toolchain.data import DataConfig, load_data
from toolchain.models import LoadedModel, create_model
from toolchain.models.checkpoint import save_checkpoint
from toolchain.sources import load_model

torch.manual_seed(0)


def quick_train(arch: str, data: str = "digits", epochs: int = 3, seed: int = 0) -> tuple[LoadedModel, object]:
    """A few epochs of plain Adam on a tiny model: enough to get a model that really classifies."""
    torch.manual_seed(seed)
    module, spec = create_model(arch, num_classes=10 if data == "digits" else 4)
    bundle = load_data(spec, DataConfig(source=data, seed=seed))
    spec = spec.replace(class_names=bundle.class_names, num_classes=bundle.num_classes)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    module.train()
    for _ in range(epochs):
        for x, y in bundle.loader("train", batch_size=64, shuffle=True):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(x), y).backward()
            optimizer.step()
    module.eval()
    return LoadedModel(spec, f"registry:{arch}", module=module), bundle


@pytest.fixture(scope="session")
def trained_tiny_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to a vtool checkpoint of tiny-cnn trained 3 epochs on digits (with its split)."""
    loaded, bundle = quick_train("tiny-cnn")
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, loaded.module, loaded.spec, split=bundle.split, data=bundle.describe(),
                    data_config=asdict(bundle.config))
    return path


@pytest.fixture(scope="session")
def tiny_cnn_model(trained_tiny_cnn: Path) -> LoadedModel:
    return load_model(str(trained_tiny_cnn))


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def exported_tiny_cnn(tiny_cnn_model: LoadedModel, tmp_path_factory: pytest.TempPathFactory):
    """Factory: format ('onnx', 'pt2', 'torchscript') -> artifact dir of the trained tiny-cnn, exported once."""
    from toolchain.export import ExportConfig, export_model

    cache: dict[str, Path] = {}

    def make(fmt: str) -> Path:
        if fmt not in cache:
            out = tmp_path_factory.mktemp(f"export-{fmt}") / f"tiny-cnn-{fmt}"
            cache[fmt] = export_model(tiny_cnn_model, ExportConfig(format=fmt, out=out)).path
        return cache[fmt]

    return make
