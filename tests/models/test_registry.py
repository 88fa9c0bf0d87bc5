"""Foundation smoke tests: registry, specs, checkpoints round-trip."""

from __future__ import annotations

import pytest

from toolchain.errors import UserInputError
from toolchain.models import count_parameters, create_model, list_models
from toolchain.sources import load_model


def test_registry_lists_tiny_models_under_50k_params() -> None:
    names = {e.name for e in list_models()}
    assert {"simple-cnn", "resnet-cnn", "vit-tiny", "efficientnet-lite0", "resnet18"} <= names
    for tiny in ("tiny-cnn", "tiny-resnet", "tiny-vit"):
        module, spec = create_model(tiny)
        assert count_parameters(module) < 50_000, tiny
        assert spec.input_size == (32, 32)


def test_unknown_model_suggests_close_name() -> None:
    with pytest.raises(UserInputError, match="Did you mean 'simple-cnn'"):
        load_model("simple-cn")


def test_checkpoint_round_trip(tiny_cnn_model, trained_tiny_cnn) -> None:
    again = load_model(str(trained_tiny_cnn))
    assert again.spec == tiny_cnn_model.spec
    assert again.source_hash == tiny_cnn_model.source_hash
