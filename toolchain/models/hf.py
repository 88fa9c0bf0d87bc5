"""Hugging Face image classifiers: the logits-only wrapper, rebuilding from a config, the ViT registry
entries, and loading a save_pretrained directory or hf:org/name (never remote code)."""

from __future__ import annotations

import logging
from typing import Any

from toolchain.errors import MissingDependencyError, UserInputError
from toolchain.models.loaded import LoadedModel, module_hash
from toolchain.models.registry import register_model
from toolchain.spec import ModelSpec

log = logging.getLogger(__name__)


def make_hf_wrapper(hf_model: Any) -> Any:
    """Wrap a transformers image classifier so forward(x) returns plain logits (export-friendly)."""
    from torch import nn

    class HFImageClassifier(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.model = inner

        def forward(self, x):  # noqa: ANN001, ANN201 - mirrors nn.Module
            return self.model(pixel_values=x).logits

    return HFImageClassifier(hf_model)


def build_hf_from_config(config_dict: dict[str, Any]) -> Any:
    """Rebuild a transformers classifier from its config dict (no weights, no remote code)."""
    from transformers import AutoConfig, AutoModelForImageClassification

    cfg = {k: v for k, v in config_dict.items() if k != "auto_map"}  # auto_map names remote code: never used
    model_type = cfg.pop("model_type", "vit")
    config = AutoConfig.for_model(model_type, **cfg)
    return make_hf_wrapper(AutoModelForImageClassification.from_config(config, trust_remote_code=False))


def _vit_factory(
    num_classes: int,
    input_size: tuple[int, int],
    pretrained: bool,
    patch_size: int = 4,
    hidden_size: int = 192,
    num_hidden_layers: int = 6,
    num_attention_heads: int = 3,
    intermediate_size: int = 384,
):
    from transformers import ViTConfig, ViTForImageClassification

    if input_size[0] != input_size[1] or input_size[0] % patch_size:
        raise UserInputError(f"vit needs a square input divisible by patch {patch_size}, got {input_size}.")
    config = ViTConfig(
        image_size=input_size[0],
        patch_size=patch_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        num_labels=num_classes,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.0,
    )
    return make_hf_wrapper(ViTForImageClassification(config))


register_model(
    "vit-tiny",
    params=1_806_538,
    description="transformers ViT, patch 4, 6 layers x 192 dims, 3 heads",
    family="vit",
)(_vit_factory)
register_model(
    "tiny-vit",
    params=21_162,
    description="vit-tiny at 2 layers x 32 dims: for tests",
    family="vit",
    kwargs={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
)(_vit_factory)




def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the Hugging Face endpoint, so offline machines fail in seconds, not after retries."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def load_hf(source: str) -> LoadedModel:
    """A local save_pretrained directory, or hf:org/name (needs the network; never remote code)."""
    try:
        from transformers import AutoImageProcessor, AutoModelForImageClassification
    except ImportError as exc:
        raise MissingDependencyError("Hugging Face models need transformers: pip install transformers.") from exc
    ref = source[3:] if source.startswith("hf:") else source
    hub_hint = (f"Could not fetch '{ref}' from the Hugging Face hub (offline or unknown name). Download it where "
                "online with save_pretrained(DIR) and pass --model DIR.")
    if source.startswith("hf:") and not hub_reachable():
        raise MissingDependencyError(hub_hint)
    try:
        model = AutoModelForImageClassification.from_pretrained(ref, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        if source.startswith("hf:"):
            raise MissingDependencyError(hub_hint) from None
        raise UserInputError(f"'{ref}' is not a loadable Hugging Face image classifier: {str(exc)[:200]}") from None
    config = model.config
    size = config.image_size if isinstance(getattr(config, "image_size", None), int) else 224
    mean, std, interp = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear"
    try:
        proc = AutoImageProcessor.from_pretrained(ref)
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
    except (OSError, ValueError, AttributeError):
        log.info("no image processor config in %s; using mean/std 0.5", ref)
    labels = tuple(config.id2label[i] for i in range(config.num_labels)) if config.id2label else ()
    spec = ModelSpec(
        architecture=f"hf:{config.model_type}", num_classes=config.num_labels, input_size=(size, size),
        channels=getattr(config, "num_channels", 3), mean=mean, std=std, interpolation=interp,
        class_names=labels, build={"kind": "hf", "config": config.to_dict()},
    )
    wrapped = make_hf_wrapper(model).eval()
    return LoadedModel(spec, f"hf:{ref}", module=wrapped, source_hash=module_hash(wrapped))
