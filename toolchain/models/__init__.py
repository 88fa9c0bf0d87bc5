"""Models, in timm's layout: a leaf registry, the architectures that register into it, and the loaders.

    registry.py    register_model / create_model / list_models / ModelEntry (imports no other model module)
    cnn.py         the project's CNNs (simple-cnn, resnet-cnn and their tiny test variants)
    zoo.py         torchvision classifiers and the offline, ImageNet-pretrained EfficientNet-Lite0
    hf.py          transformers ViT entries, the logits wrapper, load_hf (save_pretrained dirs, hf:org/name)
    checkpoint.py  save / read / load vtool checkpoints, strict state-dict checks
    user.py        path/to/file.py:ClassName models
    loaded.py      LoadedModel, what every loader returns

Importing this package registers every architecture (cnn, zoo, hf import only the registry).
"""

from toolchain.models import cnn, hf, zoo  # noqa: F401 - importing them registers their architectures
from toolchain.models.loaded import LoadedModel, module_hash
from toolchain.models.registry import (
    ModelEntry,
    count_parameters,
    create_model,
    get_entry,
    is_registered,
    list_models,
    register_model,
)

__all__ = [
    "LoadedModel", "ModelEntry", "count_parameters", "create_model", "get_entry", "is_registered", "list_models",
    "module_hash", "register_model",
]
