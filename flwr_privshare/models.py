"""GroupNorm CNNs for 32x32 RGB (CIFAR-10), 28x28 grayscale (MNIST) and 112x92 grayscale (AT&T faces)
images, and a GroupNorm ResNet.

GroupNorm instead of BatchNorm keeps every sample's gradient independent of the rest of
the batch, which Opacus's per-sample gradients require (``ModuleValidator`` rejects
BatchNorm), so the same models serve the plain, VisualMixer and DP baselines.

Every model is ``features`` (an ``nn.Sequential`` of stages) then ``pool`` then a linear
``classifier``, and names the points between its stages in ``hook_points`` (hook name ->
number of ``features`` stages before it), where :func:`flwr_privshare.poisoning.split_model`
cuts it into a featurizer and a decider.
"""

from __future__ import annotations

import torch
from torch import nn

MODEL_NAMES = ("cifar-cnn", "mnist-cnn", "faces-cnn", "cifar-resnet")


def _conv_block(in_channels: int, out_channels: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.GroupNorm(groups, out_channels),
        nn.ReLU(),  # not in place: Opacus hooks the GroupNorm output
    )


class GroupNormCNN(nn.Module):
    """Conv-GroupNorm-ReLU stages with 2x2 max pooling between them, then a linear head.

    Args:
        in_channels: image channels.
        num_classes: output classes.
        widths: channels of each stage; every stage but the last halves the resolution.
        head_pool: the last feature map is average-pooled to ``head_pool x head_pool``
            before the linear head (1 = global pooling; larger keeps the coarse layout).
        groups: GroupNorm groups per layer.
    """

    def __init__(
        self, in_channels: int, num_classes: int, widths: tuple[int, ...], head_pool: int = 1, groups: int = 8
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(widths):
            layers.append(_conv_block(channels, width, groups))
            if index < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        self.hook_points = _cnn_hook_points(len(widths))
        self.pool = nn.AdaptiveAvgPool2d(head_pool)
        self.classifier = nn.Linear(channels * head_pool * head_pool, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _cnn_hook_points(num_stages: int) -> dict[str, int]:
    """``block<i>`` after the i-th conv block, ``pool<i>`` after the max pooling that follows it."""
    points = {}
    for stage in range(1, num_stages + 1):
        points[f"block{stage}"] = 2 * stage - 1
        if stage < num_stages:
            points[f"pool{stage}"] = 2 * stage
    return points


class ResidualBlock(nn.Module):
    """ResNet's basic block with GroupNorm: two 3x3 convs and a (1x1 conv when the shape changes) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.GroupNorm(groups, out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(groups, out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.GroupNorm(groups, out_channels)
            )
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(x) + self.shortcut(x))


class GroupNormResNet(nn.Module):
    """A ResNet for small images (He et al. 2016, CIFAR variant) with GroupNorm in place of BatchNorm.

    A 3x3 stem, then one stage per width of ``blocks_per_stage`` residual blocks; every stage
    after the first halves the resolution. Hook points: ``stem``, ``stage1``, ``stage2``, ...

    Args:
        in_channels: image channels.
        num_classes: output classes.
        widths: channels of each stage.
        blocks_per_stage: residual blocks in each stage.
        groups: GroupNorm groups per layer.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: tuple[int, ...] = (32, 64, 128),
        blocks_per_stage: int = 2,
        groups: int = 8,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = [_conv_block(in_channels, widths[0], groups)]
        channels = widths[0]
        for index, width in enumerate(widths):
            blocks = [
                ResidualBlock(channels if block == 0 else width, width, 2 if index > 0 and block == 0 else 1, groups)
                for block in range(blocks_per_stage)
            ]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.features = nn.Sequential(*stages)
        self.hook_points = {"stem": 1, **{f"stage{i}": i + 1 for i in range(1, len(widths) + 1)}}
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


ImageClassifier = GroupNormCNN | GroupNormResNet


def build_model(name: str, num_classes: int = 10) -> ImageClassifier:
    """Build ``"cifar-cnn"`` or ``"cifar-resnet"`` (3x32x32 input), ``"mnist-cnn"`` (1x28x28 input) or
    ``"faces-cnn"`` (1x112x92 input, at full resolution: four stages, three poolings to 14x11)."""
    if name == "cifar-cnn":
        return GroupNormCNN(3, num_classes, widths=(32, 64, 128), head_pool=2)
    if name == "mnist-cnn":
        return GroupNormCNN(1, num_classes, widths=(16, 32, 64), head_pool=4)
    if name == "faces-cnn":
        return GroupNormCNN(1, num_classes, widths=(16, 32, 64, 64), head_pool=2)
    if name == "cifar-resnet":
        return GroupNormResNet(3, num_classes)
    raise ValueError(f"model must be one of {MODEL_NAMES}, got {name!r}")


def model_name_for(image_shape: tuple[int, int, int]) -> str:
    """The default model for a ``(C, H, W)`` image shape: by channels, and for grayscale by size."""
    if image_shape[0] != 1:
        return "cifar-cnn"
    return "faces-cnn" if min(image_shape[1:]) > 32 else "mnist-cnn"
