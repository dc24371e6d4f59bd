"""The weight compander (Cakaj, Mehnert & Yang 2023, "Weight Compander: A Simple Weight
Reparameterization for Regularization"; row [#43]) as a :class:`~weightlab.core.
transforms.Transform`: the network uses ``w = f(v)`` and the optimizer updates ``v``.

The abstract asks f to restrict "the magnitude of the weights while forcing them away
from zero at the same time", with learnable hyperparameters; it gives no formula, and the
paper body was not available here. Our reading is the μ-law compander of signal
processing (ITU-T G.711), odd and monotone, scaled to a per-tensor knee ``B``:

    f(v) = sign(v) · B · ln(1 + μ|v|/B) / ln(1 + μ),        μ > 0, B > 0.

- ``f(0) = 0``, ``f(±B) = ±B``; below the knee ``|f(v)| > |v|`` with slope
  ``f'(0) = μ / ln(1 + μ)`` (4.2 at μ = 10): small weights are expanded away from zero,
  and a step on ``v`` moves a near-zero ``w`` that much faster;
- above it ``|f(v)| < |v|`` and grows only logarithmically: large weights are compressed.

``B = knee · std(w₀)`` is set once, from the weight the transform is attached to
(``right_inverse`` stores ``v = f⁻¹(w₀)``, so attaching leaves the network's function
unchanged). ``learnable=True`` makes ``log μ`` a trained parameter (the paper learns its
hyperparameters; which ones is an assumption). :func:`attach_compander` puts one on every
selected weight; :func:`weightlab.core.transforms.merge` bakes ``f(v)`` into plain weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from weightlab.core.selectors import Selector
from weightlab.core.transforms import Transform, attach
from weightlab.errors import ConfigError


class Compander(Transform):
    """``w = sign(v) · B · ln(1 + μ|v|/B) / ln(1 + μ)`` (module docstring)."""

    def __init__(self, mu: float = 10.0, knee: float = 2.0, learnable: bool = False) -> None:
        super().__init__()
        if not (math.isfinite(mu) and mu > 0):
            raise ConfigError(f"compander mu must be a positive number, got {mu!r}")
        if not (math.isfinite(knee) and knee > 0):
            raise ConfigError(f"compander knee must be a positive number, got {knee!r}")
        self.knee = float(knee)
        log_mu = torch.tensor(math.log(mu), dtype=torch.float32)
        if learnable:
            self.log_mu = nn.Parameter(log_mu)
        else:
            self.register_buffer("log_mu", log_mu)
        self.register_buffer("bound", torch.tensor(float("nan")))

    @property
    def mu(self) -> torch.Tensor:
        return self.log_mu.exp()

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        mu, b = self.mu.to(v.dtype), self.bound.to(v.dtype)
        return torch.sign(v) * b * torch.log1p(mu * v.abs() / b) / torch.log1p(mu)

    @torch.no_grad()
    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        """``v = f⁻¹(w) = sign(w) · B · ((1 + μ)^{|w|/B} - 1) / μ``; the first call (at
        attach) sets the knee ``B = knee · std(w)``."""
        if not torch.isfinite(self.bound):
            std = float(w.detach().double().std()) if w.numel() > 1 else 0.0
            if not (math.isfinite(std) and std > 0):
                raise ConfigError(
                    "the compander's knee is set from the weight's spread; attach it to an "
                    "initialized weight with nonzero std"
                )
            self.bound.fill_(self.knee * std)
        mu, b = self.mu.to(w.dtype), self.bound.to(w.dtype)
        return torch.sign(w) * b * torch.expm1(w.abs() / b * torch.log1p(mu)) / mu


def attach_compander(
    model: nn.Module,
    selector: Selector | None = None,
    *,
    mu: float = 10.0,
    knee: float = 2.0,
    learnable: bool = False,
) -> dict[str, Compander]:
    """Attach a :class:`Compander` to every weight ``selector`` picks (default: every
    Linear and Conv weight); returns them by plain parameter name."""
    picked = (selector or Selector())(model)
    if not picked:
        raise ConfigError("the selector picked no weights for the compander")
    return {
        name: attach(model, name, Compander(mu=mu, knee=knee, learnable=learnable))
        for name in picked
    }


def near_zero_share(weights: torch.Tensor, threshold: float) -> float:
    """Fraction of entries with ``|w| < threshold``."""
    return float((weights.detach().abs() < threshold).double().mean())


__all__ = ["Compander", "attach_compander", "near_zero_share"]
