"""Generalized-Gaussian (GG) weights: maximum-likelihood fit, held-out likelihood, init.

Methods row [#24]: "It Takes a Good Model to Train a Good Model: Generalized Gaussian
Priors for Optimized LLMs" (2025) report that "pre-trained LLM parameters follow
generalized Gaussian distributions (GGDs) better" and propose a "GG-based initialization
scheme that aligns with the statistical structure of trained models".

The zero-mean GG density (Nadarajah 2005, "A generalized normal distribution", Eq. 1;
scipy's ``gennorm`` with ``scale = α``) is

    p(x; β, α) = β / (2 α Γ(1/β)) · exp(-(|x| / α)^β),

with shape ``β > 0`` (β = 2: Gaussian with σ² = α²/2; β = 1: Laplace; β → ∞: uniform on
[-α, α]) and variance ``α² Γ(3/β) / Γ(1/β)``.

- :func:`fit_generalized_gaussian` is the maximum-likelihood fit with the location fixed at
  0 (weights are centred): for fixed β the MLE of the scale is
  ``α̂(β) = (β/n · Σ|x|^β)^{1/β}`` (Varanasi & Aazhang 1989, "Parametric generalized
  Gaussian density estimation", Eq. 7), and β maximizes the profile log-likelihood
  ``ℓ(β) = n(log β − log 2α̂ − log Γ(1/β)) − n/β`` by a bounded scalar search on log β.
- **Valid range**: ``BETA_MIN <= β <= BETA_MAX`` (0.1 to 10). Below 0.1 the variance
  ``Γ(3/β)/Γ(1/β)`` exceeds 1e20 α² (a spike at 0 with rare huge values, not a weight
  prior); above 10 the density is nearly the uniform's (``exp(-(1/2)^10) > 0.999`` on
  ``|x| <= α/2``) and β is poorly identified from samples. A given β or a fitted β outside it is a
  one-line :class:`ConfigError`.
- :func:`gg_log_likelihood` is the mean per-entry log-density (held-out scoring).
- The scheme ``generalized_gaussian(beta=2.0, fit=None, std=None, gain=√2, mode="fan_in")``
  draws exactly from the GG: with ``U ~ U(0,1)`` from the tensor's generator,
  ``G = P⁻¹(1/β, U)`` (the inverse regularized lower incomplete gamma function,
  ``scipy.special.gammaincinv``) is Gamma(1/β, 1), ``|X| = α G^{1/β}`` and the sign is a
  fair coin from the same generator (Nardon & Pianca 2009, "Simulation techniques for
  generalized Gaussian densities", Sec. 3). ``fit`` (a tensor or a list of tensors, e.g.
  a trained model's weights) sets β by :func:`fit_generalized_gaussian`. The variance is
  He's ``gain² / fan`` (He et al. 2015, Eq. 10) unless ``std`` is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from weightlab.errors import ConfigError
from weightlab.init.registry import Initializer, register

BETA_MIN = 0.1
BETA_MAX = 10.0
_SEARCH = (0.02, 50.0)  # the fit searches beyond the valid range, then checks it


def check_beta(beta: float, what: str = "beta") -> float:
    """``beta`` as a float, or a one-line :class:`ConfigError` outside ``[BETA_MIN, BETA_MAX]``."""
    b = float(beta)
    if not (math.isfinite(b) and BETA_MIN <= b <= BETA_MAX):
        raise ConfigError(
            f"{what} = {b:.4g} is outside the generalized-Gaussian shape's valid range "
            f"[{BETA_MIN:g}, {BETA_MAX:g}]; give a beta in that range (2 = Gaussian, 1 = Laplace)"
        )
    return b


def _flat(x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        parts = [x]
    else:
        parts = list(x)
    if not parts:
        raise ConfigError("fit_generalized_gaussian got no values; pass a non-empty tensor")
    flat = torch.cat(
        [torch.as_tensor(p).detach().reshape(-1).to("cpu", torch.float64) for p in parts]
    )
    if flat.numel() < 2 or not torch.isfinite(flat).all():
        raise ConfigError("fit_generalized_gaussian needs >= 2 finite values")
    if float(flat.abs().max()) == 0.0:
        raise ConfigError("fit_generalized_gaussian got all-zero values; nothing to fit")
    return flat


def scale_mle(x: torch.Tensor, beta: float) -> float:
    """``α̂(β) = (β · mean |x|^β)^{1/β}``, the scale MLE at fixed β (location 0)."""
    a = _flat(x).abs()
    m = float(a.max())  # factor out the max for stability at large β
    return m * (beta * float(((a / m) ** beta).mean())) ** (1.0 / beta)


def gg_log_likelihood(x: torch.Tensor, beta: float, scale: float) -> float:
    """Mean log-density of ``x`` under the zero-mean GG(β, α = ``scale``)."""
    a = _flat(x).abs()
    return (
        math.log(beta)
        - math.log(2.0 * scale)
        - math.lgamma(1.0 / beta)
        - float(((a / scale) ** beta).mean())
    )


def _profile_terms(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``log(|x| / max|x|)`` (``-inf`` at zeros) and ``log max|x|``, computed once per fit."""
    a = x.abs()
    m = float(a.max())
    return torch.log(a / m), math.log(m)


def _profile(log_a: torch.Tensor, log_m: float, beta: float) -> float:
    """Profile log-likelihood per entry at ``beta`` with the scale at its MLE."""
    mean_pow = float(torch.exp(beta * log_a).mean())  # mean (|x|/m)^β
    log_alpha = log_m + math.log(beta * mean_pow) / beta
    return math.log(beta) - math.log(2.0) - log_alpha - math.lgamma(1.0 / beta) - 1.0 / beta


def fit_generalized_gaussian(
    x: torch.Tensor | Sequence[torch.Tensor], *, check: bool = True
) -> tuple[float, float]:
    """Maximum-likelihood ``(beta, scale)`` of a zero-mean GG to the entries of ``x`` (a
    tensor or a list of tensors, pooled). Profile likelihood in β (see the module
    docstring), maximized by bounded Brent search on ``log β`` over [0.02, 50].

    Raises:
        ConfigError: no, non-finite or all-zero values; with ``check`` (default), a fitted
            β outside the valid range ``[BETA_MIN, BETA_MAX]``.
    """
    from scipy.optimize import minimize_scalar

    flat = _flat(x)
    log_a, log_m = _profile_terms(flat)
    lo, hi = math.log(_SEARCH[0]), math.log(_SEARCH[1])
    res = minimize_scalar(
        lambda lb: -_profile(log_a, log_m, math.exp(lb)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-7},
    )
    beta = math.exp(float(res.x))
    if check:
        check_beta(beta, "the fitted beta")
    return beta, scale_mle(flat, beta)


def gaussian_fit(x: torch.Tensor | Sequence[torch.Tensor]) -> tuple[float, float]:
    """The zero-mean Gaussian's MLE as a GG: ``(2, α̂(2))`` with ``α̂(2) = √(2 · mean x²)``."""
    return 2.0, scale_mle(x, 2.0)


def gg_variance(beta: float, scale: float) -> float:
    """``α² Γ(3/β) / Γ(1/β)``."""
    return scale**2 * math.exp(math.lgamma(3.0 / beta) - math.lgamma(1.0 / beta))


def gg_scale_for_std(beta: float, std: float) -> float:
    """The scale α giving standard deviation ``std`` at shape β."""
    return std * math.exp(0.5 * (math.lgamma(1.0 / beta) - math.lgamma(3.0 / beta)))


def sample_generalized_gaussian(
    shape: Sequence[int], beta: float, scale: float, g: torch.Generator
) -> torch.Tensor:
    """Exact GG(β, α) draws (float64) from ``g``: inverse-CDF Gamma(1/β) variates
    (``scipy.special.gammaincinv`` on uniforms), ``|X| = α G^{1/β}``, random sign."""
    from scipy.special import gammaincinv

    beta = check_beta(beta)
    shape = tuple(int(s) for s in shape)
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    sign = torch.rand(shape, generator=g, dtype=torch.float64) < 0.5
    gam = torch.from_numpy(gammaincinv(1.0 / beta, u.numpy()))
    mag = scale * gam ** (1.0 / beta)
    return torch.where(sign, -mag, mag)


@register("generalized_gaussian")
class GeneralizedGaussian(Initializer):
    """Zero-mean GG weights of shape β (given, or fitted from ``fit``) with He's variance
    ``gain² / fan`` (or ``std²``); methods row [#24]. See the module docstring."""

    def __init__(
        self,
        beta: float = 2.0,
        fit: torch.Tensor | Sequence[torch.Tensor] | None = None,
        std: float | None = None,
        gain: float = math.sqrt(2.0),
        mode: str = "fan_in",
    ) -> None:
        self.beta = fit_generalized_gaussian(fit)[0] if fit is not None else check_beta(beta)
        if std is not None and not (math.isfinite(float(std)) and float(std) > 0):
            raise ConfigError(f"std must be a positive number, got {std!r}")
        self.std = None if std is None else float(std)
        if not (math.isfinite(float(gain)) and float(gain) > 0):
            raise ConfigError(f"gain must be a positive number, got {gain!r}")
        self.gain = float(gain)
        if mode not in ("fan_in", "fan_out"):
            raise ConfigError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
        self.mode = mode

    def weight(self, shape, ctx):
        fan = ctx.fan_in if self.mode == "fan_in" else ctx.fan_out
        std = self.std if self.std is not None else self.gain / math.sqrt(max(fan, 1))
        return sample_generalized_gaussian(
            shape, self.beta, gg_scale_for_std(self.beta, std), ctx.generator
        )


__all__ = [
    "BETA_MAX",
    "BETA_MIN",
    "GeneralizedGaussian",
    "check_beta",
    "fit_generalized_gaussian",
    "gaussian_fit",
    "gg_log_likelihood",
    "gg_scale_for_std",
    "gg_variance",
    "sample_generalized_gaussian",
]
