"""GroupNorm CNNs for 32x32 RGB (CIFAR-10) and 28x28 grayscale (MNIST) images.

GroupNorm instead of BatchNorm keeps every sample's gradient independent of the rest of
the batch, which Opacus's per-sample gradients require (``ModuleValidator`` rejects
BatchNorm), so the same models serve the plain, VisualMixer and DP baselines.
"""

from __future__ import annotations

import torch
from torch import nn

MODEL_NAMES = ("cifar-cnn", "mnist-cnn")


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
        self.pool = nn.AdaptiveAvgPool2d(head_pool)
        self.classifier = nn.Linear(channels * head_pool * head_pool, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def build_model(name: str, num_classes: int = 10) -> GroupNormCNN:
    """Build ``"cifar-cnn"`` (3x32x32 input) or ``"mnist-cnn"`` (1x28x28 input)."""
    if name == "cifar-cnn":
        return GroupNormCNN(3, num_classes, widths=(32, 64, 128), head_pool=2)
    if name == "mnist-cnn":
        return GroupNormCNN(1, num_classes, widths=(16, 32, 64), head_pool=4)
    raise ValueError(f"model must be one of {MODEL_NAMES}, got {name!r}")


def model_name_for(image_shape: tuple[int, int, int]) -> str:
    """The default model for a ``(C, H, W)`` image shape."""
    return "mnist-cnn" if image_shape[0] == 1 else "cifar-cnn"
