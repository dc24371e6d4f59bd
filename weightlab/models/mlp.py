"""Multilayer perceptron of any widths, e.g. LeNet-300-100 as ``MLP([784, 300, 100, 10])``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from weightlab.errors import ConfigError


def identity(x: torch.Tensor) -> torch.Tensor:
    """The linear (identity) activation: a deep linear network (Saxe et al. 2014)."""
    return x


ACTIVATIONS = {
    "relu": nn.functional.relu,
    "tanh": torch.tanh,
    "gelu": nn.functional.gelu,
    "sin": torch.sin,  # SIREN's periodic activation (Sitzmann et al. 2020); ω0 is an init concern
    "linear": identity,  # no nonlinearity: a deep linear network
}


def check_mlp_args(widths: Sequence[int], activation: str, what: str = "MLP") -> list[int]:
    """``widths`` as ints after checking them (>= 2 positive) and ``activation`` (one of
    :data:`ACTIVATIONS`); a one-line :class:`ConfigError` otherwise."""
    widths = [int(w) for w in widths]
    if len(widths) < 2 or any(w <= 0 for w in widths):
        raise ConfigError(f"{what} widths must be >= 2 positive integers, got {widths}")
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}"
        )
    return widths


class MLP(nn.Module):
    """``widths = [in, h1, ..., out]``; Linear layers ``layers.0 .. layers.{L-1}`` with
    ``activation`` (relu, tanh, gelu, sin or linear) between them and none after the last (logits
    or regression outputs)."""

    def __init__(self, widths: Sequence[int], activation: str = "relu") -> None:
        super().__init__()
        widths = check_mlp_args(widths, activation)
        self.widths = widths
        self.activation = activation
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        act = ACTIVATIONS[self.activation]
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = act(x)
        return x
