"""Residual MLP: a linear stem, ``B`` residual blocks ``h + fc2(relu(fc1(h)))``, a linear head.

The model of the layer-pruning recipe (Jordao et al. 2023, "When Layers Play the Lottery,
all Tickets Win at Initialization", row [#22]): blocks have identity skips, so removing a
block leaves a well-formed, smaller network (:func:`weightlab.sparsity.layers.remove_blocks`).

Parameter names: ``stem.*``, ``blocks.{i}.fc1.*``, ``blocks.{i}.fc2.*``, ``head.*``.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from weightlab.errors import ConfigError


class ResBlock(nn.Module):
    """``h + fc2(relu(fc1(h)))`` with ``fc1: width -> hidden``, ``fc2: hidden -> width``."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(torch.relu(self.fc1(h)))


class ResMLP(nn.Module):
    """``in_features -> width`` linear stem, ``blocks`` residual blocks of internal width
    ``hidden`` (default ``width``), ``width -> num_classes`` linear head. No activation
    outside the blocks: a block is the only non-linearity, so every block counts.

    ``forward(x, skip=...)`` skips the listed block indices (identity), the reference that
    block removal is tested against."""

    def __init__(
        self,
        in_features: int,
        width: int,
        blocks: int,
        num_classes: int,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        hidden = width if hidden is None else hidden
        if min(in_features, width, num_classes, hidden) <= 0 or blocks < 0:
            raise ConfigError(
                f"ResMLP needs positive sizes and blocks >= 0; got in={in_features}, "
                f"width={width}, hidden={hidden}, blocks={blocks}, classes={num_classes}"
            )
        self.in_features, self.width, self.hidden = int(in_features), int(width), int(hidden)
        self.num_classes = int(num_classes)
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(ResBlock(width, hidden) for _ in range(blocks))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor, skip: Collection[int] = ()) -> torch.Tensor:
        h = self.stem(x.flatten(1))
        for i, block in enumerate(self.blocks):
            if i not in skip:
                h = block(h)
        return self.head(h)


__all__ = ["ResBlock", "ResMLP"]
