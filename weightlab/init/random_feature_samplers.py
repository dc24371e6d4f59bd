"""Weight samplers of random-feature models that the basic schemes lack.

The registry's ``uniform`` already is the bounded-uniform ``U[-B, B]`` of bandlimited random
nets (Li et al., "How Powerful are Shallow Neural Networks with Bandlimited Random Weights?",
Sec. 2: hidden parameters drawn in a bounded domain), and ``normal`` the zero-mean Gaussian.
This module adds the non-zero-mean Gaussian, ``shifted_normal``: ``W ~ N(mean, std²)``
entry-wise (non-zero-mean random projections, as in random-feature attention with a biased
query/key prior). Like every scheme it draws only from ``ctx.generator``.

Registered on import (:mod:`weightlab.kernels.random_features` imports it); listing it in
the registry's ``FAMILY_MODULES`` makes ``get_initializer("shifted_normal")`` find it
without that import.
"""

from __future__ import annotations

import math

import torch

from weightlab.errors import ConfigError
from weightlab.init.registry import InitContext, Initializer, _check_positive, register


def shifted_normal(
    shape: tuple[int, ...],
    mean: float,
    std: float,
    g: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """``N(mean, std²)`` entries of ``shape`` drawn in place from ``g`` (one pass)."""
    return torch.empty(tuple(shape), dtype=dtype).normal_(float(mean), float(std), generator=g)


@register("shifted_normal")
class ShiftedNormal(Initializer):
    """``W ~ N(mean, std²)`` entry-wise; the bias is zero (as every basic scheme's)."""

    def __init__(self, mean: float = 1.0, std: float = 1.0) -> None:
        m = float(mean)
        if not math.isfinite(m):
            raise ConfigError(f"mean must be a finite number, got {mean!r}")
        self.mean = m
        self.std = _check_positive("std", std)

    def weight(self, shape: torch.Size, ctx: InitContext) -> torch.Tensor:
        dtype = ctx.dtype if ctx.dtype in (torch.float32, torch.float64) else torch.float64
        return shifted_normal(tuple(shape), self.mean, self.std, ctx.generator, dtype)


__all__ = ["ShiftedNormal", "shifted_normal"]
