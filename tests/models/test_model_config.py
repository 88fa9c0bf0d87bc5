"""models/config.py: the shared model options (flags + --config file in vtool, timm and Hugging Face dialects),
a user class's own defaults, class counts read from --weights, class names from the data, and every bad value
as a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import image_folder, one_line_error, one_torch_thread, run_cli  # noqa: F401

from toolchain.errors import UserInputError
from toolchain.models.config import ModelOptions, read_config
from toolchain.sources import head_size, load_model
from toolchain.spec import IMAGENET_MEAN, IMAGENET_STD

SIX_CLASS_MODEL = '''
import torch
from torch import nn


class SixNet(nn.Module):
    def __init__(self, num_classes: int = 6):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


class FixedHead(nn.Module):
    """Takes no num_classes: its forward says how many classes it has."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5))

    def forward(self, x):
        return self.body(x)


class NeedsCount(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes))

    def forward(self, x):
        return self.body(x)
'''


@pytest.fixture(scope="module")
def six(tmp_path_factory: pytest.TempPathFactory) -> Path:
    file = tmp_path_factory.mktemp("user") / "six.py"
    file.write_text(SIX_CLASS_MODEL)
    return file


def test_a_user_class_keeps_its_own_default_class_count(six: Path) -> None:
    loaded = load_model(f"{six}:SixNet")
    assert loaded.spec.num_classes == 6 and loaded.module.fc.out_features == 6  # not vtool's 10
    assert load_model(f"{six}:FixedHead").spec.num_classes == 5  # read from what its forward returns
    assert load_model(f"{six}:SixNet", num_classes=3).spec.num_classes == 3
    with pytest.raises(UserInputError, match="NeedsCount needs num_classes and has no default"):
        load_model(f"{six}:NeedsCount")


def test_the_class_count_comes_from_weights_then_data(six: Path, tmp_path: Path) -> None:
    weights = tmp_path / "four.pt"
    torch.save(load_model(f"{six}:SixNet", num_classes=4).module.state_dict(), weights)
    assert head_size(torch.load(weights)) == 4
    loaded = load_model(f"{six}:SixNet", weights=weights)  # the weights' head beats the class default
    assert loaded.spec.num_classes == 4 and loaded.checkpoint == weights and loaded.info["pretrained"] is True
    folder = image_folder(tmp_path / "three", classes=3, per_class=3)
    named = load_model(f"{six}:NeedsCount", data=str(folder))  # no default: the data's class folders decide
    assert named.spec.num_classes == 3 and named.spec.class_names == ("circle", "square", "triangle")
    tiny = tmp_path / "tiny4.pt"
    torch.save(load_model("tiny-cnn", num_classes=4).module.state_dict(), tiny)
    assert load_model("tiny-cnn", weights=tiny).spec.num_classes == 4  # registry models read the head too


def test_config_file_dialects(tmp_path: Path) -> None:
    vtool = tmp_path / "vtool.json"
    (tmp_path / "labels.txt").write_text("cat\ndog\n\nfox\n")
    vtool.write_text(json.dumps({"input_size": [48, 40], "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                                 "interpolation": "bicubic", "crop_pct": 0.875, "labels": "labels.txt"}))
    opts = ModelOptions.from_flags(config=vtool)
    assert opts.input_size == (48, 40) and opts.mean == IMAGENET_MEAN and opts.crop_pct == 0.875
    assert opts.class_names == ("cat", "dog", "fox") and opts.config == str(vtool)
    timm = tmp_path / "timm.json"
    timm.write_text(json.dumps({"architecture": "x", "num_classes": 3, "label_names": ["a", "b", "c"],
                                "pretrained_cfg": {"input_size": [3, 64, 64], "interpolation": "bilinear",
                                                   "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                                   "crop_pct": 0.9}}))
    assert read_config(timm) == {"class_names": ("a", "b", "c"), "channels": 3, "input_size": (64, 64),
                                 "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear",
                                 "crop_pct": 0.9, "num_classes": 3}
    hf = tmp_path / "preprocessor_config.json"
    hf.write_text(json.dumps({"image_processor_type": "ConvNextImageProcessor", "do_resize": True,
                              "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "resample": 3,
                              "size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}}))
    opts = ModelOptions.from_flags(config=hf, mean="0.5")  # flags override the file
    assert opts.input_size == (224, 224) and opts.crop_pct == 224 / 256 and opts.interpolation == "bicubic"
    assert opts.mean == (0.5,) and opts.std == IMAGENET_STD


def test_options_land_in_the_spec_and_the_manifest(six: Path, tmp_path: Path) -> None:
    from toolchain.export import ExportConfig, export_model

    opts = ModelOptions.from_flags(mean="0.485,0.456,0.406", std="0.229,0.224,0.225", input_size="24",
                                   interpolation="bicubic", crop_pct=0.9)
    loaded = load_model(f"{six}:SixNet", options=opts)
    spec = loaded.spec
    assert spec.mean == IMAGENET_MEAN and spec.input_size == (24, 24) and spec.crop_pct == 0.9
    artifact = export_model(loaded, ExportConfig(format="onnx", out=tmp_path / "six-onnx", verify_samples=4)).artifact
    manifest = json.loads((artifact.path / "manifest.json").read_text())
    assert manifest["spec"]["mean"] == list(IMAGENET_MEAN) and manifest["spec"]["interpolation"] == "bicubic"
    assert manifest["source"]["options"]["crop_pct"] == 0.9
    bare = load_model(str(artifact.model_path))  # a loose .onnx: classes and size read from its graph
    assert bare.spec.num_classes == 6 and bare.spec.input_size == (24, 24)


@pytest.mark.parametrize("flags, match", [
    (("--mean", "0.5,0.5"), "--mean needs 3 finite values"),
    (("--std", "0.2,0.2,0"), "--std values must be > 0"),
    (("--std", "a,b,c"), "--std 'a,b,c' must be comma-separated numbers"),
    (("--interpolation", "lanczos"), "Unknown interpolation 'lanczos'"),
    (("--crop-pct", "1.5"), "--crop-pct must be in (0, 1]"),
    (("--crop-pct", "0"), "--crop-pct must be in (0, 1]"),
    (("--input-size", "32x"), "--input-size '32x' is not a size"),
])
def test_bad_model_flags_are_one_line_errors(six: Path, flags: tuple[str, ...], match: str) -> None:
    one_line_error(run_cli("eval", "--model", f"{six}:SixNet", "--data", "digits", *flags), match)


def test_bad_labels_and_config_files_are_one_line_errors(six: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\nd\ne\n")  # 5 names for the 6 classes of these weights
    weights = tmp_path / "six.pt"
    torch.save(load_model(f"{six}:SixNet").module.state_dict(), weights)
    one_line_error(run_cli("predict", "--model", f"{six}:SixNet", "--weights", weights, "--labels", labels,
                           "--image", labels), "does not fit six:SixNet, which predicts 6 classes")
    one_line_error(run_cli("export", "--model", f"{six}:SixNet", "--format", "onnx", "--labels", labels,
                           "--num-classes", "6"), "--labels has 5 class names but --num-classes is 6")
    labels.write_text("a\nb\na\n")
    one_line_error(run_cli("bench", f"{six}:SixNet", "--labels", labels), "names class 'a' twice")
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"meen": [0.5, 0.5, 0.5]}))
    one_line_error(run_cli("quantize", "--model", f"{six}:SixNet", "--config", config),
                   "unknown key 'meen'. Did you mean 'mean'?")
    config.write_text("{not json")
    one_line_error(run_cli("train", "--model", f"{six}:SixNet", "--config", config, "--out", tmp_path / "r"),
                   "is not valid JSON")
    one_line_error(run_cli("parity", f"{six}:SixNet", f"{six}:SixNet", "--config", tmp_path / "none.json"),
                   "Config file")


def test_recorded_models_refuse_a_conflicting_structure(tiny_cnn_model, trained_tiny_cnn: Path) -> None:
    with pytest.raises(UserInputError, match="--num-classes 6 conflicts with tiny-cnn, which predicts 10"):
        load_model(str(trained_tiny_cnn), num_classes=6)
    with pytest.raises(UserInputError, match="--weights applies to a registry name or file.py:Class"):
        load_model(str(trained_tiny_cnn), weights=trained_tiny_cnn)
    relabelled = load_model(str(trained_tiny_cnn), options=ModelOptions(class_names=tuple("abcdefghij"),
                                                                        mean=(0.4,)))
    assert relabelled.spec.labels[0] == "a" and relabelled.spec.mean == (0.4, 0.4, 0.4)


def test_a_plain_state_dict_given_as_the_model_names_the_right_flags(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    torch.save(load_model("tiny-cnn").module.state_dict(), weights)
    message = one_line_error(run_cli("parity", weights, weights), "plain state_dict")
    assert "vtool parity mycnn.py:MyCNN CANDIDATE --weights" in message  # a flag parity really has
    assert "--weights" in run_cli("parity", "--help").stdout
