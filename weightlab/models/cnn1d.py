"""A 1-D convolutional network for sequence inputs such as MNIST-1D (length 40)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from weightlab.errors import ConfigError


class CNN1D(nn.Module):
    """Conv1d blocks (kernel ``kernel``, stride 2, 'same'-style padding, ReLU, optional
    BatchNorm) followed by a Linear classifier on the flattened features.

    Input ``(B, L)`` or ``(B, 1, L)``; output logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        length: int = 40,
        channels: Sequence[int] = (32, 32),
        kernel: int = 5,
        num_classes: int = 10,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        if length <= 0 or kernel <= 0 or not channels or any(c <= 0 for c in channels):
            raise ConfigError("CNN1D needs positive length, kernel and channel counts")
        blocks: list[nn.Module] = []
        c_in, n = 1, length
        for c in channels:
            blocks.append(nn.Conv1d(c_in, c, kernel, stride=2, padding=kernel // 2))
            if batchnorm:
                blocks.append(nn.BatchNorm1d(c))
            blocks.append(nn.ReLU())
            n = (n + 2 * (kernel // 2) - kernel) // 2 + 1
            c_in = c
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(c_in * n, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.classifier(self.features(x).flatten(1))
