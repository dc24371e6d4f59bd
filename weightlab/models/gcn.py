"""A plain-torch graph convolutional network on a dense normalized adjacency.

Layer ``ℓ`` computes ``Z_ℓ = Â H_{ℓ-1} W_ℓᵀ + b_ℓ`` and ``H_ℓ = φ(Z_ℓ)`` (φ = ReLU, none
after the last layer), ``H_0 = X`` (Kipf & Welling 2017, "Semi-Supervised Classification
with Graph Convolutional Networks", Eq. 2). ``Â`` and ``X`` are the whole graph's, kept
as buffers, so the model is transductive: its input is a batch of node indices (a float
column, as :func:`weightlab.data.graphs.load_sbm` gives them) and its output those
nodes' logits. Weights are ``layers.{i}.weight`` of ``nn.Linear`` modules, so every
weightlab selector, initializer and transform applies.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from weightlab.errors import ConfigError


class GCN(nn.Module):
    """``widths = [d_in, h_1, ..., n_classes]``: ``len(widths) - 1`` graph convolutions.
    ``adjacency``: (N, N) normalized adjacency; ``features``: (N, d_in) node features."""

    def __init__(
        self, adjacency: torch.Tensor, features: torch.Tensor, widths: Sequence[int]
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or any(w <= 0 for w in widths):
            raise ConfigError(f"GCN widths must be >= 2 positive integers, got {widths}")
        n = adjacency.shape[0]
        if adjacency.dim() != 2 or adjacency.shape[1] != n:
            raise ConfigError(f"GCN adjacency must be square, got {tuple(adjacency.shape)}")
        if features.dim() != 2 or features.shape[0] != n or features.shape[1] != widths[0]:
            raise ConfigError(
                f"GCN features must be ({n}, {widths[0]}) for this adjacency and widths; "
                f"got {tuple(features.shape)}"
            )
        self.widths = widths
        self.activation = "relu"
        self.register_buffer("adjacency", adjacency.detach().clone().float())
        self.register_buffer("features", features.detach().clone().float())
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def propagate(self) -> list[torch.Tensor]:
        """Every layer's pre-activation ``Z_ℓ`` (N, h_ℓ) for all nodes, first to last."""
        h = self.features
        out = []
        for i, layer in enumerate(self.layers):
            z = self.adjacency @ F.linear(h, layer.weight) + layer.bias
            out.append(z)
            h = torch.relu(z) if i < len(self.layers) - 1 else z
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = x.reshape(-1).long()
        return self.propagate()[-1][idx]


def layer_variances(
    model: GCN, nodes: torch.Tensor, labels: torch.Tensor
) -> tuple[list[float], list[float]]:
    """Forward and backward variance per layer at the model's current weights: ``Var
    Z_ℓ`` over all nodes and units, and ``Var ∂L/∂Z_ℓ`` for ``L`` the mean cross-entropy
    of ``labels`` on ``nodes`` (the quantities Li et al. 2023, Sec. 3, keep constant
    across layers). Float64 on a copy; the model is not changed."""
    import copy

    m = copy.deepcopy(model).double()
    zs = m.propagate()
    for z in zs:
        z.retain_grad()
    idx = nodes.reshape(-1).long()
    F.cross_entropy(zs[-1][idx], labels.reshape(-1).long()).backward()
    fwd = [float(z.detach().var()) for z in zs]
    bwd = [float(z.grad.var()) for z in zs]
    return fwd, bwd


def mean_abs_log_ratio(values: Sequence[float]) -> float:
    """Mean over consecutive layers of ``|log(v_{ℓ+1} / v_ℓ)|``: 0 when every layer keeps
    its predecessor's variance."""
    import math

    logs = [abs(math.log(b / a)) for a, b in zip(values[:-1], values[1:], strict=True)]
    return sum(logs) / len(logs) if logs else 0.0


__all__ = ["GCN", "layer_variances", "mean_abs_log_ratio"]
