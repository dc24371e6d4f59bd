"""Virgo: variance instability reduction for GNN initialization (Li et al. 2023, "On the
Initialization of Graph Neural Networks", ICML; row [#20]).

Reading (the abstract names the factors, "the activation function, hidden dimension,
graph structure and message passing", and gives no formula; the variances below follow
the authors' released implementation of the paper's result, read, not copied). For a GCN
``Z_ℓ = Â H_{ℓ-1} W_ℓ``, ``H_ℓ = ReLU(Z_ℓ)``, ``ℓ = 1..L``, write the message-passing
energies

    c_k = ‖Â^k u‖²   (forward; u_i = mean of node i's input features),
    c'_k = ‖Â^k 1‖²  (backward; 1 the all-ones vector, so c'_0 = N).

Forward variance is kept from layer to layer when (ReLU halves the second moment, the
aggregation scales the energy by c_ℓ / c_{ℓ-1})

    σ²_fwd(1) = 2 / m_0,    σ²_fwd(ℓ) = (2 / m_{ℓ-1}) · c_{ℓ-1} / c_ℓ   (ℓ >= 2),

and backward variance when

    σ²_bwd(L) = c'_0 / ((C - 1) · c'_1),    σ²_bwd(ℓ) = (2 / m_ℓ) · c'_{L-ℓ} / c'_{L-ℓ+1}   (ℓ < L),

with ``m_ℓ`` the width after layer ℓ (the weight's fan-in ``m_{ℓ-1}`` and fan-out
``m_ℓ``) and ``C`` the number of classes (the softmax cross-entropy gradient's variance at
the logits, ≈ 1/(C-1) per unit in the authors' derivation). Virgo takes their harmonic
mean, ``σ²(ℓ) = 2 / (1/σ²_fwd + 1/σ²_bwd)`` (as Glorot & Bengio 2010, Eq. 12, average
the forward and backward conditions), and draws ``U(-√(3σ²), √(3σ²))`` (the released
code's distribution; ``dist="normal"`` draws ``N(0, σ²)``).

Assumptions (where this reading may differ from the paper body, not available here): the
forward signal is the per-node mean of the features, as in the released code; the
layers are the selected weights in order, ``ctx.index = ℓ - 1`` and ``ctx.depth = L``;
``m`` uses each weight's own fan-in / fan-out (the code uses the hidden width for all
hidden layers, the same on a constant-width GCN).
"""

from __future__ import annotations

import math

import torch

from weightlab.errors import ConfigError
from weightlab.init.registry import InitContext, Initializer, _check_dist, _draw, register

MEANS = ("harmonic", "arithmetic")
DIRECTIONS = ("both", "forward", "backward")


def _graph_parts(ctx: InitContext) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Â, X)`` from ``ctx.graph`` (a tensor Â, or an object / mapping with
    ``adjacency`` and ``features``) and, for a bare Â, node features from ``ctx.data``."""
    g = ctx.graph
    if isinstance(g, torch.Tensor):
        adj, feats = g, ctx.data
    elif isinstance(g, dict):
        adj, feats = g.get("adjacency"), g.get("features", ctx.data)
    else:
        adj, feats = getattr(g, "adjacency", None), getattr(g, "features", ctx.data)
    if not isinstance(adj, torch.Tensor) or adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
        raise ConfigError(
            "virgo needs graph= a square normalized adjacency (or a Graph with .adjacency)"
        )
    if not isinstance(feats, torch.Tensor) or feats.dim() != 2 or feats.shape[0] != adj.shape[0]:
        raise ConfigError(
            "virgo needs the node features (N, d): pass a Graph with .features or data=features"
        )
    return adj.detach().double().cpu(), feats.detach().double().cpu()


def propagation_energies(adjacency: torch.Tensor, signal: torch.Tensor, k: int) -> list[float]:
    """``[‖Â^j s‖² for j = 0..k]`` (float64)."""
    out, v = [], signal.double().reshape(-1)
    adj = adjacency.double()
    out.append(float(v @ v))
    for _ in range(k):
        v = adj @ v
        out.append(float(v @ v))
    return out


def virgo_variances(
    adjacency: torch.Tensor,
    features: torch.Tensor,
    widths: list[int],
    mean: str = "harmonic",
    direction: str = "both",
) -> list[float]:
    """Virgo's weight variance of each of the ``L = len(widths) - 1`` layers of a GCN with
    widths ``[m_0, ..., m_L]`` (``m_L`` = number of classes); see the module docstring."""
    depth = len(widths) - 1
    if depth < 1:
        raise ConfigError("virgo needs at least one layer (widths of length >= 2)")
    if mean not in MEANS or direction not in DIRECTIONS:
        raise ConfigError(f"virgo mean must be one of {MEANS} and direction one of {DIRECTIONS}")
    energies = _energies(adjacency.double(), features.double(), depth)
    return [
        _layer_variance(ell, depth, widths[ell - 1], widths[ell], energies, mean, direction)
        for ell in range(1, depth + 1)
    ]


def _energies(adj: torch.Tensor, feats: torch.Tensor, depth: int):
    ones = torch.ones(adj.shape[0], dtype=torch.float64)
    return propagation_energies(adj, feats.mean(1), depth), propagation_energies(adj, ones, depth)


def _layer_variance(
    ell: int, depth: int, fan_in: int, fan_out: int, energies, mean: str, direction: str
) -> float:
    """σ² of layer ``ell`` (1-based) of ``depth``: the forward and backward conditions
    of the module docstring, combined by ``mean`` (or one of them, ``direction``)."""
    c, cb = energies

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else math.inf

    fwd = 2.0 / fan_in * (1.0 if ell == 1 else ratio(c[ell - 1], c[ell]))
    if ell == depth:
        bwd = ratio(cb[0], max(fan_out - 1, 1) * cb[1])
    else:
        bwd = 2.0 / fan_out * ratio(cb[depth - ell], cb[depth - ell + 1])
    if not all(math.isfinite(v) and v > 0 for v in (fwd, bwd)):
        raise ConfigError(
            f"virgo variance of layer {ell} is undefined: the graph signal vanishes "
            "(an all-zero feature mean or an empty graph); check the features and adjacency"
        )
    if direction == "forward":
        var = fwd
    elif direction == "backward":
        var = bwd
    elif mean == "harmonic":
        var = 2.0 / (1.0 / fwd + 1.0 / bwd)
    else:
        var = 0.5 * (fwd + bwd)
    return var


@register("virgo")
class Virgo(Initializer):
    """Virgo (Li et al. 2023, ICML), the per-layer variance of :func:`virgo_variances`
    for the selected weights of a GCN, taken in order as layers ``1..L``. Needs
    ``graph=`` (the normalized adjacency, or a :class:`weightlab.data.graphs.Graph`)."""

    needs = ("graph",)

    def __init__(self, dist: str = "uniform", mean: str = "harmonic", direction: str = "both"):
        self.dist = _check_dist(dist)
        if mean not in MEANS:
            raise ConfigError(f"virgo mean must be one of {MEANS}, got {mean!r}")
        if direction not in DIRECTIONS:
            raise ConfigError(f"virgo direction must be one of {DIRECTIONS}, got {direction!r}")
        self.mean, self.direction = mean, direction
        self._cache: dict = {}

    def variance(self, ctx: InitContext) -> float:
        """The variance of the layer ``ctx`` describes."""
        adj, feats = _graph_parts(ctx)
        key = (id(ctx.graph), id(ctx.data), ctx.depth)
        hit = self._cache.get(key)
        if hit is None:  # keeps the graph alive with its energies, so its id is not reused
            hit = (_energies(adj, feats, ctx.depth), ctx.graph, ctx.data)
            self._cache = {key: hit}
        energies = hit[0]
        ell = ctx.index + 1
        return _layer_variance(
            ell, ctx.depth, ctx.fan_in, ctx.fan_out, energies, self.mean, self.direction
        )

    def weight(self, shape, ctx):
        return _draw(self.dist, shape, self.variance(ctx), ctx.generator, ctx.dtype)


__all__ = ["Virgo", "propagation_energies", "virgo_variances"]
