"""WINNER: weight initialization with noise for neural representations (Chandravamsi et al.
2025, "Spectral Bottleneck in Deep Neural Networks: Noise is All You Need", arXiv
2509.09719): a SIREN's uniform initialization perturbed with Gaussian noise whose scales
follow the target signal's spectral centroid.

Base (Sitzmann et al. 2020, "Implicit Neural Representations with Periodic Activation
Functions", Sec. 3.2 and Supplement 1.5), ``n`` the layer's fan-in, ``ω0`` the SIREN's
frequency factor (each sine layer computes ``sin(ω0 (W x + b))``):

- first layer ``W ~ U(-1/n, 1/n)``; every other layer ``W ~ U(-√(6/n)/ω0, √(6/n)/ω0)``;
- biases ``U(-1/√n, 1/√n)`` (``nn.Linear``'s default, kept by the SIREN reference code and
  by :class:`weightlab.models.siren.SIREN`).

Perturbation (the paper's 1-D mapping, as we read it): with ``SC`` the target's spectral
centroid, the power-weighted mean frequency of its real FFT divided by the Nyquist
frequency (so ``SC ∈ [0, 1]``; :func:`spectral_centroid`),

- ``s0 = s0_max · (1 − exp(−a · SC))`` and ``s1 = b · SC``, with the paper's audio
  constants ``s0_max = 3500``, ``a = 7``, ``b = 3``;
- the first layer's weights get ``+ N(0, (s0/ω0)²)`` and the second layer's ``+ N(0,
  (s1/ω0)²)``; the noise is added to the weight *before* the ``ω0`` factor, so the first
  layer's angular frequencies ``ω0·W`` spread with standard deviation ``s0``. Later layers
  and biases are not perturbed.

A low-frequency target (``SC → 0``) therefore gets the plain SIREN init; a broadband
high-frequency one gets first-layer frequencies of order ``s0_max``.

``target``: the signal on a uniform grid, a 1-D tensor / array (or ``(N, 1)``), or a
:class:`~weightlab.data.task.TaskData` (its training targets, in order).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from weightlab.errors import ConfigError
from weightlab.init.registry import InitContext, Initializer, register

S0_MAX = 3500.0
A = 7.0
B = 3.0


def _signal(target: Any) -> np.ndarray:
    from weightlab.data.task import TaskData

    if isinstance(target, TaskData):
        target = target.train.y
    if isinstance(target, torch.Tensor):
        target = target.detach().cpu().double().numpy()
    y = np.asarray(target, dtype=np.float64)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1 or y.size < 4 or not np.all(np.isfinite(y)):
        raise ConfigError(
            f"winner needs a finite 1-D target signal of >= 4 samples, got shape {y.shape}; "
            "pass target=<signal on a uniform grid>"
        )
    return y


def spectral_centroid(target: Any) -> float:
    """``Σ_k k·|Y_k|² / Σ_k |Y_k|²`` over the real FFT bins ``k = 0..N/2`` of ``target``,
    divided by the Nyquist bin ``N/2``: ``0`` for a constant, ``1`` for the Nyquist tone."""
    y = _signal(target)
    p = np.abs(np.fft.rfft(y)) ** 2
    if p.sum() == 0:
        return 0.0
    k = np.arange(len(p))
    return float((k * p).sum() / p.sum() / (len(y) / 2))


def noise_scales(
    sc: float, s0_max: float = S0_MAX, a: float = A, b: float = B
) -> tuple[float, float]:
    """``(s0, s1) = (s0_max (1 − e^{−a·SC}), b·SC)``: the noise standard deviations of the
    first and second layers, in units of angular frequency (divide by ``ω0`` for ``W``)."""
    return s0_max * (1.0 - math.exp(-a * sc)), b * sc


def _nonneg(name: str, v: float) -> float:
    v = float(v)
    if not (math.isfinite(v) and v >= 0):
        raise ConfigError(f"winner {name} must be a finite number >= 0, got {v!r}")
    return v


@register("winner")
class Winner(Initializer):
    """SIREN init plus spectral-centroid-scaled Gaussian noise on the first two layers
    (module docstring).

    Args:
        omega0: the SIREN's ``ω0`` (weightlab's :class:`~weightlab.models.siren.SIREN`
            default, 30).
        s0_max, a, b: the centroid → noise mapping's constants (paper's audio values).
    """

    needs = ("target",)

    def __init__(
        self, omega0: float = 30.0, s0_max: float = S0_MAX, a: float = A, b: float = B
    ) -> None:
        self.omega0 = float(omega0)
        if not (math.isfinite(self.omega0) and self.omega0 > 0):
            raise ConfigError(f"winner omega0 must be > 0, got {omega0!r}")
        self.s0_max, self.a, self.b = _nonneg("s0_max", s0_max), _nonneg("a", a), _nonneg("b", b)
        self._cache: tuple[Any, float] | None = None  # (target, centroid)

    def scales(self, target: Any) -> tuple[float, float]:
        """``(s0, s1)`` for ``target`` (cached per target object; the cache holds the
        object itself, so a later target cannot reuse a freed one's ``id``)."""
        if self._cache is None or self._cache[0] is not target:
            self._cache = (target, spectral_centroid(target))
        return noise_scales(self._cache[1], self.s0_max, self.a, self.b)

    def weight(self, shape: torch.Size, ctx: InitContext) -> torch.Tensor:
        n = max(ctx.fan_in, 1)
        bound = 1.0 / n if ctx.index == 0 else math.sqrt(6.0 / n) / self.omega0
        g = ctx.generator
        w = (torch.rand(tuple(shape), generator=g, dtype=torch.float64) * 2 - 1) * bound
        if ctx.index < 2:
            s = self.scales(ctx.target)[ctx.index]
            if s > 0:
                w = w + torch.randn(tuple(shape), generator=g, dtype=torch.float64) * (
                    s / self.omega0
                )
        return w

    def bias(self, shape: torch.Size, ctx: InitContext) -> torch.Tensor:
        bound = 1.0 / math.sqrt(max(ctx.fan_in, 1))
        return (
            torch.rand(tuple(shape), generator=ctx.generator, dtype=torch.float64) * 2 - 1
        ) * bound


__all__ = ["Winner", "noise_scales", "spectral_centroid"]
