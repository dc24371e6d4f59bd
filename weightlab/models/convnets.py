"""Small 2-D convolutional networks with BatchNorm: a plain CNN and a residual CNN.

- :class:`SmallCNN`: conv-BN-ReLU blocks (the second and later after a 2x2 max-pool),
  global average pooling and a linear classifier.
- :class:`ResidualCNN`: a stem conv-BN-ReLU, ``blocks`` basic blocks (He et al. 2016,
  "Deep Residual Learning for Image Recognition", Fig. 2: conv-BN-ReLU-conv-BN plus the
  identity skip, then ReLU) at one width and resolution, global average pooling and a
  linear classifier. ``inner`` sets each block's internal width (the output channels of
  its first conv), which structured pruning shrinks; the trunk width stays ``width``
  because the residual adds tie those channels together.

Both keep their widths as attributes so a structurally pruned copy can be rebuilt with
the same class (:mod:`weightlab.sparsity.structured`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from weightlab.errors import ConfigError


def _positive(values: Sequence[int], what: str) -> list[int]:
    vals = [int(v) for v in values]
    if not vals or any(v <= 0 for v in vals):
        raise ConfigError(f"{what} must be positive integers, got {list(values)}")
    return vals


class SmallCNN(nn.Module):
    """``Conv2d(3x3, padding 1)-BatchNorm2d-ReLU`` per entry of ``channels`` (a 2x2
    max-pool before every block but the first), then global average pooling and
    ``Linear(channels[-1], num_classes)``. Input ``(B, in_channels, H, W)``."""

    def __init__(
        self, in_channels: int = 3, channels: Sequence[int] = (16, 32), num_classes: int = 10
    ) -> None:
        super().__init__()
        self.in_channels = _positive([in_channels], "SmallCNN in_channels")[0]
        self.channels = _positive(channels, "SmallCNN channels")
        self.num_classes = _positive([num_classes], "SmallCNN num_classes")[0]
        layers: list[nn.Module] = []
        c_in = self.in_channels
        for i, c in enumerate(self.channels):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


class BasicBlock(nn.Module):
    """``relu(x + bn2(conv2(relu1(bn1(conv1(x))))))`` with 3x3 convs (He et al. 2016,
    Fig. 2); ``inner`` is conv1's output width."""

    def __init__(self, width: int, inner: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, inner, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(inner, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(x + self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


class ResidualCNN(nn.Module):
    """Stem ``Conv2d(in_channels, width, 3x3)-BN-ReLU``, ``blocks`` :class:`BasicBlock`
    s with identity skips (internal widths ``inner``, default ``width`` each), global
    average pooling and ``Linear(width, num_classes)``. The benchmark's network is the
    default: 8 blocks, 64 channels, for 3x32x32 inputs."""

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 64,
        blocks: int = 8,
        num_classes: int = 10,
        inner: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = _positive([in_channels], "ResidualCNN in_channels")[0]
        self.width = _positive([width], "ResidualCNN width")[0]
        n_blocks = _positive([blocks], "ResidualCNN blocks")[0]
        self.num_classes = _positive([num_classes], "ResidualCNN num_classes")[0]
        self.inner = _positive(inner if inner is not None else [width] * n_blocks, "inner widths")
        if len(self.inner) != n_blocks:
            raise ConfigError(
                f"ResidualCNN got {len(self.inner)} inner widths for {n_blocks} blocks; "
                "pass one per block"
            )
        self.stem = nn.Conv2d(self.in_channels, self.width, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(self.width)
        self.stem_relu = nn.ReLU()
        self.blocks = nn.Sequential(*(BasicBlock(self.width, c) for c in self.inner))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.width, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem_relu(self.stem_bn(self.stem(x))))
        return self.classifier(self.pool(x).flatten(1))


__all__ = ["BasicBlock", "ResidualCNN", "SmallCNN"]
