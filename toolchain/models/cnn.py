"""The project's own CNNs: simple-cnn (teaching CNN) and resnet-cnn (BatchNorm ResNet for small images)."""

from __future__ import annotations

from toolchain.errors import UserInputError
from toolchain.models.registry import register_model


def _simple_cnn(num_classes: int, input_size: tuple[int, int], pretrained: bool, widths=(32, 64, 64), hidden=128):
    from torch import nn

    layers: list[nn.Module] = []
    in_ch = 3
    for width in widths:
        layers += [nn.Conv2d(in_ch, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        in_ch = width
    h, w = input_size[0] // 2 ** len(widths), input_size[1] // 2 ** len(widths)
    if h < 1 or w < 1:
        raise UserInputError(f"simple-cnn needs an input of at least {2 ** len(widths)} pixels, got {input_size}.")
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(in_ch * h * w, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(hidden, num_classes),
    )


register_model(
    "simple-cnn",
    params=188_810,
    description="Teaching CNN: conv 32-64-64 + max-pool, FC 128, dropout 0.5",
    family="cnn",
)(_simple_cnn)
register_model(
    "tiny-cnn",
    params=12_266,
    description="simple-cnn at widths 8-16-16, FC 32: for tests",
    family="cnn",
    kwargs={"widths": (8, 16, 16), "hidden": 32},
)(_simple_cnn)


def _basic_block(in_ch: int, out_ch: int, stride: int):
    """A residual block with two separate ReLU modules (torchao's x86 quantizer needs them apart)."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_ch)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_ch)
            self.relu2 = nn.ReLU()
            self.shortcut: nn.Module = nn.Identity()
            if stride != 1 or in_ch != out_ch:
                self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.relu1(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu2(out + self.shortcut(x))

    return BasicBlock()


def _resnet_cnn(
    num_classes: int,
    input_size: tuple[int, int],
    pretrained: bool,
    widths=(32, 64, 128, 256),
    blocks: int = 2,
    dropout: float = 0.2,
):
    from torch import nn

    if blocks < 2:
        raise UserInputError(f"resnet-cnn needs at least 2 blocks per stage, got {blocks}.")
    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    in_ch = widths[0]
    for stage, width in enumerate(widths):
        for i in range(blocks):
            layers.append(_basic_block(in_ch, width, 2 if (i == 0 and stage > 0) else 1))
            in_ch = width
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_ch, num_classes)
    )


register_model(
    "resnet-cnn",
    params=2_797_610,
    description="ResNet for small images: BatchNorm, 4 stages 32-256 x 2 residual blocks, GAP, dropout",
    family="resnet",
)(_resnet_cnn)
register_model(
    "tiny-resnet",
    params=36_442,
    description="resnet-cnn at widths 8-12-16-24: for tests",
    family="resnet",
    kwargs={"widths": (8, 12, 16, 24)},
)(_resnet_cnn)
