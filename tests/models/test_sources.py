"""Model sources: registry names, weights files, user modules, Hugging Face dirs, offline hub names."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_USER_MODEL, one_line_error, one_torch_thread, run_cli  # noqa: F401

from toolchain.errors import MissingDependencyError, UserInputError, VtoolError
from toolchain.models import create_model
from toolchain.sources import load_model
from toolchain.train import find_head


@pytest.fixture(scope="module")
def tiny_cnn_state(tmp_path_factory):
    """A plain torch.save(state_dict) of tiny-cnn (10 classes)."""
    module, _ = create_model("tiny-cnn")
    path = tmp_path_factory.mktemp("weights") / "tiny_cnn_state.pt"
    torch.save(module.state_dict(), path)
    return path


@pytest.fixture()
def offline_hub(monkeypatch):
    """Make the Hugging Face hub fail at once, as it does on this machine (no retries with back-off)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_unknown_model_library_and_cli(tmp_path) -> None:
    with pytest.raises(UserInputError, match="Unknown model 'resnet-cn'.*Did you mean 'resnet-cnn'"):
        load_model("resnet-cn")
    result = run_cli("train", "--model", "resnet-cn", "--data", "synthetic", "--epochs", 1, "--out", tmp_path / "r")
    one_line_error(result, "Did you mean 'resnet-cnn'")
    result = run_cli("predict", "--model", "nope-net", "--image", tmp_path / "x.png")
    assert result.exit_code == 1


def test_weights_of_another_architecture(tiny_cnn_state, tmp_path) -> None:
    with pytest.raises(VtoolError, match="does not match architecture 'tiny-resnet'"):
        load_model("tiny-resnet", weights=tiny_cnn_state)
    result = run_cli("eval", "--model", "tiny-resnet", "--weights", tiny_cnn_state, "--data", "digits")
    one_line_error(result, "does not match architecture")


def test_weights_of_another_class_count(tiny_cnn_state, tmp_path) -> None:
    with pytest.raises(VtoolError, match="shape mismatch"):
        load_model("tiny-cnn", weights=tiny_cnn_state, num_classes=4)
    result = run_cli("train", "--model", "tiny-cnn", "--weights", tiny_cnn_state, "--data", "synthetic",
                 "--epochs", 1, "--out", tmp_path / "run")
    one_line_error(result, "shape mismatch")
    assert not (tmp_path / "run").exists()


def test_checkpoint_with_other_class_count_cannot_train_on_data(trained_tiny_cnn, tmp_path) -> None:
    result = run_cli("train", "--model", trained_tiny_cnn, "--data", "synthetic", "--epochs", 1,
                     "--out", tmp_path / "r")
    one_line_error(result, "predicts 10 classes but data")


def test_weights_file_that_is_not_weights(tmp_path) -> None:
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"definitely not a torch file")
    with pytest.raises(UserInputError, match="not a loadable weights file"):
        load_model("tiny-cnn", weights=bad)


def test_hub_name_offline_fails_fast_and_clearly(offline_hub, tmp_path) -> None:
    with pytest.raises(MissingDependencyError, match="Hugging Face hub"):
        load_model("hf:google/vit-base-patch16-224")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    result = run_cli("predict", "--model", "hf:google/vit-base-patch16-224", "--image", image)
    one_line_error(result, "Hugging Face hub")


def test_torchvision_pretrained_offline(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # never find a cached download
    with pytest.raises(MissingDependencyError, match="pretrained resnet18 weights"):
        load_model("resnet18", pretrained=True)
    result = run_cli("eval", "--model", "resnet18", "--pretrained", "--data", "digits")
    one_line_error(result, "--weights PATH")


def test_user_module_with_state_dict(tmp_path) -> None:
    file = tmp_path / "my_net.py"
    file.write_text(TINY_USER_MODEL)
    ref = f"{file}:TinyNet"
    first = load_model(ref, num_classes=3)
    weights = tmp_path / "my_state.pt"
    torch.save(first.module.state_dict(), weights)
    again = load_model(ref, num_classes=3, weights=weights)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(first.module(x), again.module(x))
    assert again.spec.num_classes == 3 and again.spec.build["kind"] == "user"
    with pytest.raises(UserInputError, match="has no class 'Nope'"):
        load_model(f"{file}:Nope")
    with pytest.raises(VtoolError, match="shape mismatch"):
        load_model(ref, num_classes=5, weights=weights)


def test_hugging_face_save_pretrained_round_trip(tmp_path) -> None:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, num_labels=3, id2label={0: "cat", 1: "dog", 2: "fox"},
                       label2id={"cat": 0, "dog": 1, "fox": 2})
    torch.manual_seed(0)
    original = ViTForImageClassification(config).eval()
    original.save_pretrained(tmp_path / "hf-vit")
    loaded = load_model(str(tmp_path / "hf-vit"))
    assert loaded.spec.class_names == ("cat", "dog", "fox") and loaded.spec.input_size == (32, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(original(pixel_values=x).logits, loaded.module(x), atol=1e-6)
    assert find_head(loaded.module) is loaded.module.model.classifier


@pytest.mark.parametrize(("name", "head_attr"), [
    ("tiny-cnn", None), ("tiny-resnet", None), ("resnet18", "fc"), ("mobilenet_v3_small", "classifier"),
])
def test_find_head(name, head_attr) -> None:
    module, _ = create_model(name, num_classes=5, pretrained=False)
    head = find_head(module)
    if head_attr is None:
        assert head is [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]
    else:
        assert head is getattr(module, head_attr)
    assert sum(p.numel() for p in head.parameters()) > 0


def test_find_head_timm_efficientnet() -> None:
    module, spec = create_model("efficientnet-lite0", num_classes=4, pretrained=False, input_size=(64, 64))
    assert find_head(module) is module.get_classifier() and spec.input_size == (64, 64)
