"""Analytic learning curve of a linear student on a noisy linear teacher (Advani & Saxe 2020,
"High-dimensional dynamics of generalization error in neural networks", Sec. 2-3).

Setting: inputs ``x ~ N(0, I/d)``, teacher ``y = w̄ᵀx + ε`` with ``w̄ ~ N(0, σ_w² I)`` and
``ε ~ N(0, σ_ε²)``, student ``w₀ ~ N(0, σ₀² I)`` trained by full-batch gradient descent
with step ``η`` on ``½ Σ_μ (y_μ − wᵀx_μ)²`` over ``n`` samples, ``α = n/d``. In the
eigenbasis of ``XᵀX`` (eigenvalue ``λ``) the error ``e = w − w̄`` evolves as
``e_t = (1 − ηλ)^t e₀ + (1 − (1 − ηλ)^t) e_∞`` with ``E e₀² = σ₀² + σ_w²`` and
``E e_∞² = σ_ε²/λ`` (``λ > 0``); directions with ``λ = 0`` never move (the frozen
subspace, a fraction ``(1 − α)₊``). Averaging over the spectrum (Marchenko-Pastur)::

    E_g(t) = σ_ε² + (1−α)₊(σ₀²+σ_w²)
             + ∫ ρ_α(λ) [(σ₀²+σ_w²)(1−ηλ)^{2t} + (σ_ε²/λ)(1−(1−ηλ)^t)²] dλ,
    ρ_α(λ) = √((λ₊−λ)(λ−λ₋)) / (2πλ),   λ± = (1 ± √α)²,

the mass of ``ρ_α`` being ``min(1, α)``. ``E_g = ‖w − w̄‖²/d + σ_ε²`` is the exact
expected test MSE on a fresh sample.

Quadrature: the substitution ``λ = λ₋ + (λ₊ − λ₋)(1 − cos θ)/2``, ``θ ∈ [0, π]`` turns
``√((λ₊−λ)(λ−λ₋)) dλ`` into ``((λ₊−λ₋)/2)² sin²θ dθ``, removing both square-root endpoints;
the integrand, extended evenly, is then a smooth ``2π``-periodic function of ``θ``
(``sin²θ/λ`` stays finite even at ``α = 1``, where ``λ₋ = 0``), so the midpoint rule in
``θ`` converges exponentially fast (Trefethen & Weideman 2014, "The exponentially
convergent trapezoidal rule").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from weightlab.errors import ConfigError

DEFAULT_NODES = 1024


def mp_edges(alpha: float) -> tuple[float, float]:
    """``(λ₋, λ₊) = ((1 − √α)², (1 + √α)²)``: the support of the nonzero eigenvalues of
    ``XᵀX`` for ``X`` ``n × d`` with ``N(0, 1/d)`` entries, ``α = n/d``."""
    _check_alpha(alpha)
    r = math.sqrt(alpha)
    return (1.0 - r) ** 2, (1.0 + r) ** 2


def mp_density(lam: torch.Tensor | float, alpha: float) -> torch.Tensor:
    """Marchenko-Pastur density ``ρ_α(λ) = √((λ₊−λ)(λ−λ₋))/(2πλ)`` of the nonzero part of
    the spectrum (float64; zero outside ``[λ₋, λ₊]``). It integrates to ``min(1, α)``."""
    lo, hi = mp_edges(alpha)
    lam = torch.as_tensor(lam, dtype=torch.float64)
    inside = (lam > lo) & (lam < hi) & (lam > 0)
    safe = torch.where(inside, lam, torch.ones_like(lam))
    val = torch.sqrt(((hi - safe) * (safe - lo)).clamp_min(0)) / (2 * math.pi * safe)
    return torch.where(inside, val, torch.zeros_like(lam))


def mp_nodes(alpha: float, nodes: int = DEFAULT_NODES) -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrature nodes ``λ_k`` and weights ``w_k`` with ``Σ_k w_k f(λ_k) ≈ ∫ ρ_α(λ) f(λ) dλ``
    (cosine substitution, then the ``nodes``-point midpoint rule in ``θ``), float64."""
    if not (isinstance(nodes, int) and nodes >= 8):
        raise ConfigError(f"nodes must be an integer >= 8, got {nodes!r}")
    lo, hi = mp_edges(alpha)
    theta = (torch.arange(nodes, dtype=torch.float64) + 0.5) * (math.pi / nodes)
    wt = math.pi / nodes
    half = (hi - lo) / 2
    lam = lo + half * (1 - torch.cos(theta))
    # ρ dλ = √((λ₊−λ)(λ−λ₋)) / (2πλ) · half·sinθ dθ = half² sin²θ / (2πλ) dθ
    weights = wt * half**2 * torch.sin(theta) ** 2 / (2 * math.pi * lam)
    return lam, weights


def generalization_curve(
    alpha: float,
    steps: Sequence[int] | torch.Tensor | int,
    eta: float,
    sigma_w2: float = 1.0,
    sigma_eps2: float = 0.0,
    sigma_02: float = 0.0,
    nodes: int = DEFAULT_NODES,
) -> torch.Tensor:
    """The expected test MSE ``E_g(t)`` of gradient descent (module docstring; Advani & Saxe
    2020, Sec. 3) at the integer steps ``steps`` (an int ``T`` means ``0..T``), float64,
    vectorized over ``t``.

    Args:
        alpha: ``n/d`` > 0.
        steps: gradient-descent steps ``t ≥ 0`` (integers: ``1 − ηλ`` may be negative).
        eta: the step size on ``½ Σ (y − wᵀx)²``; stable when ``η λ₊ < 2``.
        sigma_w2, sigma_eps2, sigma_02: teacher, noise and initial-weight variances (≥ 0).
        nodes: midpoint-rule nodes of the quadrature.
    """
    _check_alpha(alpha)
    for name, v in (("sigma_w2", sigma_w2), ("sigma_eps2", sigma_eps2), ("sigma_02", sigma_02)):
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"{name} must be a finite variance >= 0, got {v}")
    if not (math.isfinite(eta) and eta > 0):
        raise ConfigError(f"eta must be > 0, got {eta}")
    t = torch.arange(steps + 1) if isinstance(steps, int) else torch.as_tensor(steps)
    t = t.to(torch.float64).reshape(-1)
    if t.numel() and (bool((t < 0).any()) or not torch.equal(t, t.round())):
        raise ConfigError("steps must be integers >= 0 (gradient-descent step counts)")
    lam, w = mp_nodes(alpha, nodes)
    s = sigma_02 + sigma_w2
    decay = torch.pow((1 - eta * lam).unsqueeze(0), t.unsqueeze(1))  # (T, K)
    integrand = s * decay.square() + (sigma_eps2 / lam) * (1 - decay).square()
    frozen = max(0.0, 1.0 - alpha) * s
    return sigma_eps2 + frozen + integrand @ w


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"alpha = n/d must be a finite number > 0, got {alpha!r}")
