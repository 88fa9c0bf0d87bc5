"""Heatmap methods: Grad-CAM / Grad-CAM++ (the `grad-cam` package, torch models only) and occlusion
(forward-only, so it runs on every artifact through its Runner: INT8 ONNX, .pt2, TorchScript, OpenVINO).

Every method returns float32 maps of shape (N, H, W) at the model's input resolution, scaled to [0, 1] per
image (Grad-CAM's own convention), for one target class per image.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolchain.errors import MissingDependencyError, UserInputError

log = logging.getLogger(__name__)

GRAD_METHODS = ("gradcam", "gradcam++")
METHODS = (*GRAD_METHODS, "occlusion")
# what makes a module "the same feature map, post-processed" after the last conv: kept in the target layer
_SAME_MAP = ("ReLU", "ReLU6", "SiLU", "GELU", "Hardswish", "LeakyReLU", "BatchNorm2d", "BatchNormAct2d", "GroupNorm",
             "Identity", "Dropout", "Dropout2d")
CAVEAT = (
    "Heatmaps are evidence, not proof. Grad-CAM can look plausible even for a model with randomized weights "
    "(Adebayo et al., 2018, 'Sanity Checks for Saliency Maps'), it is only as sharp as the layer it reads "
    "(a 32x32 input read at an 8x8 feature map gives 4-pixel blocks), and occlusion depends on the window size "
    "and the grey fill it uses. Explanation parity compares two models with the same method on the same images: "
    "it tells whether the optimized model's evidence moved, not whether either explanation is right."
)
_BLOCK_INPUT_NORMS = ("layernorm_before", "norm1", "ln_1", "ln1")


@dataclass
class TargetLayer:
    """The layer Grad-CAM reads (its activations and their gradients), how it was chosen, and for transformers
    the reshape from tokens (N, 1 + h*w, D) back to a grid (N, D, h, w)."""

    name: str
    module: Any
    reshape: Any = None
    why: str = ""


def _forward_trace(module: Any, x: Any) -> list[tuple[str, Any, tuple[int, ...]]]:
    """(name, module, output shape) for every module, in the order their forward() finished."""
    import torch

    order: list[tuple[str, Any, tuple[int, ...]]] = []
    hooks = []
    for name, sub in module.named_modules():
        if not name:
            continue

        def hook(mod: Any, _inp: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor):
                order.append((name, mod, tuple(out.shape)))
            elif isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
                order.append((name, mod, tuple(out[0].shape)))

        hooks.append(sub.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in hooks:
            handle.remove()
    return order


def token_reshape(grid: tuple[int, int]) -> Any:
    """Tokens (N, 1 + h*w, D) -> (N, D, h, w), dropping the class token (pytorch-grad-cam's ViT recipe)."""

    def reshape(tensor: Any) -> Any:
        tokens = tensor[:, tensor.shape[1] - grid[0] * grid[1]:, :]
        return tokens.reshape(tensor.size(0), grid[0], grid[1], tensor.size(2)).permute(0, 3, 1, 2)

    return reshape


def find_target_layer(module: Any, input_shape: tuple[int, ...], name: str | None = None) -> TargetLayer:
    """The layer Grad-CAM should read: `name` when given; else the output of the last conv block (the last
    Conv2d, extended over the norms/activations and enclosing blocks that keep its feature map's shape); for a
    transformer with no late conv, the last block's input norm with a token -> grid reshape."""
    import torch

    modules = dict(module.named_modules())
    trace = _forward_trace(module, torch.zeros(input_shape))
    if name is not None:
        if name not in modules:
            near = [n for n in modules if n.endswith(name.split(".")[-1])][:3]
            raise UserInputError(f"--target-layer '{name}' is not a layer of this model"
                                 f"{'; did you mean ' + ', '.join(near) if near else ''}.")
        shape = next((s for n, _, s in trace if n == name), ())
        reshape = _grid_reshape(shape) if len(shape) == 3 else None
        return TargetLayer(name, modules[name], reshape, "given")
    last_conv = max((i for i, (_, mod, shape) in enumerate(trace)
                     if type(mod).__name__ == "Conv2d" and len(shape) == 4 and min(shape[2:]) > 1), default=None)
    tokens = [i for i, (_, mod, shape) in enumerate(trace) if len(shape) == 3 and type(mod).__name__ == "LayerNorm"
              and _grid_reshape(shape) is not None]
    if last_conv is not None and not (tokens and tokens[-1] > last_conv):
        chosen = last_conv
        for i in range(last_conv + 1, len(trace)):
            name_i, mod_i, shape_i = trace[i]
            encloses = trace[chosen][0].startswith(name_i + ".")
            if shape_i != trace[chosen][2] or not (encloses or type(mod_i).__name__ in _SAME_MAP):
                break
            chosen = i
        layer_name, layer, _ = trace[chosen]
        return TargetLayer(layer_name, layer, None, "last conv block")
    if tokens:
        # the last block's first norm (pytorch-grad-cam's ViT recipe): later norms feed per-token MLPs whose
        # gradients reach only the class token, so their maps are blank
        first_norms = [i for i in tokens if trace[i][0].rsplit(".", 1)[-1] in _BLOCK_INPUT_NORMS]
        index = first_norms[-1] if first_norms else tokens[-1]
        layer_name, layer, shape = trace[index]
        return TargetLayer(layer_name, layer, _grid_reshape(shape), "last transformer block (tokens -> grid)")
    raise UserInputError("No convolution or transformer block found for Grad-CAM; pass --target-layer NAME or use "
                         "--method occlusion (works on any model).")


def _grid_reshape(shape: tuple[int, ...]) -> Any:
    """A token reshape when (N, T, D) has T = h*w or 1 + h*w tokens on a square grid, else None."""
    for tokens in (shape[1] - 1, shape[1]):
        side = int(math.isqrt(max(tokens, 0)))
        if side > 1 and side * side == tokens:
            return token_reshape((side, side))
    return None


def grad_cam(module: Any, x: np.ndarray, targets: list[int], method: str = "gradcam",
             layer: TargetLayer | None = None) -> np.ndarray:
    """Grad-CAM or Grad-CAM++ maps (N, H, W) in [0, 1] for an eager torch module."""
    try:
        from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        raise MissingDependencyError("Grad-CAM needs the grad-cam package: pip install 'vtool[explain]' "
                                     "(or use --method occlusion, which needs nothing extra).") from None
    import torch

    layer = layer or find_target_layer(module, (1, *x.shape[1:]))
    cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
    inplace = [m for m in module.modules() if getattr(m, "inplace", False)]
    for m in inplace:  # an in-place activation after the hooked layer would rewrite the saved activations
        m.inplace = False
    try:
        with cls(model=module, target_layers=[layer.module], reshape_transform=layer.reshape) as cam:
            maps = cam(input_tensor=torch.from_numpy(np.ascontiguousarray(x)),
                       targets=[ClassifierOutputTarget(int(t)) for t in targets])
    finally:
        for m in inplace:
            m.inplace = True
    return np.nan_to_num(np.asarray(maps, dtype=np.float32))


def occlusion_masks(size: tuple[int, int], window: int | None = None,
                    stride: int | None = None) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) windows covering the image; default window = a quarter of the short side."""
    height, width = size
    window = window or max(1, round(min(height, width) / 4))
    stride = stride or max(1, window // 2)
    tops = sorted({*range(0, max(height - window, 0) + 1, stride), max(height - window, 0)})
    lefts = sorted({*range(0, max(width - window, 0) + 1, stride), max(width - window, 0)})
    return [(t, s, min(t + window, height), min(s + window, width)) for t in tops for s in lefts]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def occlusion(runner: Any, x: np.ndarray, targets: list[int], window: int | None = None, stride: int | None = None,
              batch_size: int = 64) -> np.ndarray:
    """Occlusion sensitivity through any Runner: grey out (0 after normalization = the mean colour) one window at
    a time; a pixel's score is the mean drop of the target's log-probability over the windows covering it."""
    n, _, height, width = x.shape
    masks = occlusion_masks((height, width), window, stride)
    maps = np.zeros((n, height, width), dtype=np.float32)
    base = _log_softmax(runner.infer_batched(x, batch_size))
    for i in range(n):
        batch = np.repeat(x[i:i + 1], len(masks), axis=0)
        for j, (top, left, bottom, right) in enumerate(masks):
            batch[j, :, top:bottom, left:right] = 0.0
        scores = _log_softmax(runner.infer_batched(batch, batch_size))[:, targets[i]]
        total = np.zeros((height, width))
        count = np.zeros((height, width))
        for (top, left, bottom, right), score in zip(masks, scores, strict=True):
            total[top:bottom, left:right] += base[i, targets[i]] - score
            count[top:bottom, left:right] += 1
        maps[i] = _unit(total / np.maximum(count, 1))
    return maps


def _unit(heat: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (a flat map stays 0); negative evidence (occluding helped) clips to 0."""
    heat = np.clip(heat, 0, None)
    top = heat.max()
    return (heat / top).astype(np.float32) if top > 0 else np.zeros_like(heat, dtype=np.float32)
