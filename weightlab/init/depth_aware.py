"""Depth-aware variance (row [#96]): "Depth-Aware Initialization for Stable and Efficient
Neural Network Training" (arXiv.org, 2024).

The abstract states that "for deeper networks theoretical assumption of unit variance
throughout the network does not perform well. It requires the need to increase the variance
of the network from first layer activation to last layer activation", in a "flexible manner,
which incorporates the information of each layer depth". The exact schedule is in the paper
body, which weightlab does not have; the family below is **our reading** of that statement:

- start from He's variance (He et al. 2015, Eq. 10), ``Var W_ℓ = gain² / fan_in``, which keeps
  the activation variance ``q_ℓ`` constant through a ReLU net;
- multiply layer ``ℓ`` (0-based, ``L`` selected weights: ``ctx.index`` / ``ctx.depth``) by
  ``κ_ℓ = growth ** w_ℓ`` with ``w_ℓ = ((ℓ + 1) / L) ** power / Σ_j ((j + 1) / L) ** power``.

So ``κ_ℓ`` rises with the relative depth ``ℓ / L`` (``power > 0``; ``power = 0`` spreads the
growth evenly), and the activation variance rises from the first to the last layer by
``q_L / q_0 = Π_ℓ κ_ℓ = growth`` whatever the depth: the total growth is set once, each layer's
share depends on its relative position. ``growth = 1`` is He init exactly. Defaults (our
choice, not the paper's numbers): ``growth = 4`` (last-layer activation variance 4x the first),
``power = 1`` (shares rising linearly with ``ℓ / L``), ``gain² = 2`` (ReLU).
"""

from __future__ import annotations

import math

import torch

from weightlab.errors import ConfigError
from weightlab.init.registry import InitContext, Initializer, _check_dist, _draw, register


def depth_aware_multipliers(depth: int, growth: float = 4.0, power: float = 1.0) -> list[float]:
    """``κ_ℓ`` for ``ℓ = 0 .. depth-1``: the factor on He's variance of layer ``ℓ``; their
    product is ``growth`` and they rise with ``ℓ / depth`` when ``power > 0``."""
    if depth < 1:
        raise ConfigError(f"depth must be >= 1, got {depth}")
    shares = [((i + 1) / depth) ** power for i in range(depth)]
    total = sum(shares)
    return [growth ** (s / total) for s in shares]


def depth_aware_variance(
    fan_in: int,
    index: int,
    depth: int,
    growth: float = 4.0,
    power: float = 1.0,
    gain: float = 2**0.5,
) -> float:
    """``Var W_ℓ = gain² κ_ℓ / fan_in`` (see the module docstring)."""
    return gain**2 * depth_aware_multipliers(depth, growth, power)[index] / max(fan_in, 1)


@register("depth_aware")
class DepthAware(Initializer):
    """Depth-aware variance [#96]: He's variance times ``κ_ℓ`` rising with ``ℓ / L`` so
    that the activation variance grows by ``growth`` from the first to the last layer (our
    reading of the abstract; see :mod:`weightlab.init.depth_aware`)."""

    def __init__(
        self,
        growth: float = 4.0,
        power: float = 1.0,
        gain: float = math.sqrt(2.0),
        dist: str = "normal",
    ) -> None:
        for name, v, lo in (("growth", growth, 0.0), ("gain", gain, 0.0)):
            if not (math.isfinite(float(v)) and float(v) > lo):
                raise ConfigError(f"depth_aware {name} must be a positive number, got {v!r}")
        if not (math.isfinite(float(power)) and float(power) >= 0):
            raise ConfigError(f"depth_aware power must be >= 0, got {power!r}")
        self.growth, self.power, self.gain = float(growth), float(power), float(gain)
        self.dist = _check_dist(dist)

    def variance(self, ctx: InitContext) -> float:
        return depth_aware_variance(
            ctx.fan_in, ctx.index, ctx.depth, self.growth, self.power, self.gain
        )

    def weight(self, shape: torch.Size, ctx: InitContext) -> torch.Tensor:
        return _draw(self.dist, shape, self.variance(ctx), ctx.generator, ctx.dtype)


__all__ = ["DepthAware", "depth_aware_multipliers", "depth_aware_variance"]
