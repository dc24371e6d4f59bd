"""Maximum-likelihood factor analysis by EM, and posterior means ``E[z | x]``.

The pretraining step of "On the Provable Advantage of Unsupervised Pretraining" (Ge, Tang,
Fan & Jin 2023, row [#37]), whose framework "cover[s] a wide range of approaches for
unsupervised pretraining, including factor models": Maximum Likelihood Estimation of the
latent-variable model on ``m`` unlabeled inputs, then a downstream predictor on the
learned representation ``E[z | x]``.

Model: ``x = μ + Λ z + ε``, ``z ~ N(0, I_r)``, ``ε ~ N(0, Ψ)``, ``Ψ`` diagonal, so
``x ~ N(μ, Σ)`` with ``Σ = ΛΛᵀ + Ψ``. ``μ`` is the sample mean; ``Λ, Ψ`` maximize the
log-likelihood ``−½ m [d log 2π + log|Σ| + tr(Σ⁻¹ S)]`` (``S`` the sample covariance,
divisor ``m``) by the EM algorithm of Rubin & Thayer (1982), written with
``β = Λᵀ Σ⁻¹ = M⁻¹ Λᵀ Ψ⁻¹``, ``M = I + Λᵀ Ψ⁻¹ Λ`` (Woodbury, so only ``r × r`` systems):

    E-step:  C = E[zzᵀ] = I − β Λ + β S βᵀ   (averaged over the data)
    M-step:  Λ ← S βᵀ C⁻¹,   Ψ ← max(diag(S − Λ β S), floor).

The posterior of one input is ``z | x ~ N(β (x − μ), M⁻¹)``. EM never decreases the
likelihood; it starts from principal components (``Λ`` the top-``r`` eigenvectors of
``S`` scaled by ``√(λ − ψ̄)``, ``ψ̄`` the mean of the rest) and stops when one iteration
raises the mean log-likelihood per example by less than ``tol``. ``Ψ`` is floored at
``noise_floor`` times the mean variance (a Heywood case, ``ψ_i → 0``, is common when
``m < d``). Compared with scikit-learn's ``FactorAnalysis`` (SVD iterations, same
objective) in ``tests/test_dynamics_factor_analysis.py``; scikit-learn is never called here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from weightlab.errors import ConfigError, DataError

__all__ = ["FactorModel", "fit_factor_analysis"]


@dataclass(frozen=True)
class FactorModel:
    """A fitted factor model (float64).

    Attributes:
        mean: ``(d,)`` sample mean ``μ``; loadings: ``(d, r)`` ``Λ``; noise: ``(d,)`` ``diag Ψ``.
        log_likelihood: mean log-likelihood per training example at the fit.
        iterations: EM iterations run; converged: the last one gained less than ``tol``.
    """

    mean: Tensor
    loadings: Tensor
    noise: Tensor
    log_likelihood: float
    iterations: int
    converged: bool

    @property
    def covariance(self) -> Tensor:
        """``Σ = ΛΛᵀ + Ψ``."""
        return self.loadings @ self.loadings.T + torch.diag(self.noise)

    def posterior_mean(self, x: Tensor) -> Tensor:
        """``E[z | x] = β (x − μ)``, ``(n, r)`` float64, for rows ``x`` of shape ``(n, d)``."""
        x = _check(x, "x", self.mean.numel())
        return (x - self.mean) @ _beta(self.loadings, self.noise)[0].T

    def score(self, x: Tensor) -> float:
        """Mean log-likelihood per row of ``x`` under the fitted Gaussian."""
        x = _check(x, "x", self.mean.numel())
        xc = x - self.mean
        s = xc.T @ xc / x.shape[0]
        return _loglik(self.loadings, self.noise, s)


def _check(x: Tensor, name: str, d: int | None = None) -> Tensor:
    if x.dim() != 2:
        raise DataError(f"factor analysis: {name} must be (n, d); got shape {tuple(x.shape)}")
    if d is not None and x.shape[1] != d:
        raise DataError(f"factor analysis: {name} has {x.shape[1]} columns; the model has {d}")
    x = x.detach().to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"factor analysis: {name} has non-finite values; pass finite inputs")
    return x


def _beta(lam: Tensor, psi: Tensor) -> tuple[Tensor, Tensor]:
    """``(β, M)`` with ``M = I + ΛᵀΨ⁻¹Λ`` and ``β = M⁻¹ΛᵀΨ⁻¹`` (``r × d``)."""
    lt_psi = lam.T / psi
    m = torch.eye(lam.shape[1], dtype=lam.dtype) + lt_psi @ lam
    return torch.linalg.solve(m, lt_psi), m


def _loglik(lam: Tensor, psi: Tensor, s: Tensor) -> float:
    """Mean Gaussian log-likelihood ``−½[d log 2π + log|Σ| + tr(Σ⁻¹S)]`` (Woodbury)."""
    d = psi.numel()
    beta, m = _beta(lam, psi)
    logdet = float(torch.log(psi).sum() + torch.linalg.slogdet(m)[1])
    # tr(Σ⁻¹S) = tr(Ψ⁻¹S) − tr(Ψ⁻¹Λ β S)
    trace = float((torch.diagonal(s) / psi).sum() - ((lam / psi[:, None]) * (s @ beta.T)).sum())
    return -0.5 * (d * math.log(2 * math.pi) + logdet + trace)


def fit_factor_analysis(
    x: Tensor,
    r: int,
    max_iter: int = 5000,
    tol: float = 1e-7,
    noise_floor: float = 1e-6,
) -> FactorModel:
    """Fit ``r`` factors to the rows of ``x`` by EM (module docstring).

    Args:
        x: ``(m, d)`` inputs, ``m >= 2``.
        r: number of factors, ``1 <= r < d``.
        max_iter: EM iterations at most; tol: stop once an iteration gains less than this
            (mean log-likelihood per example).
        noise_floor: ``ψ_i >= noise_floor × mean_i S_ii``.
    """
    x = _check(x, "x")
    m, d = x.shape
    if not 1 <= r < d:
        raise ConfigError(f"factor analysis: r must be in [1, d) = [1, {d}); got {r}")
    if m < 2:
        raise DataError(f"factor analysis: needs at least 2 examples; got {m}")
    mean = x.mean(0)
    xc = x - mean
    s = xc.T @ xc / m
    var = torch.diagonal(s).clone()
    floor = noise_floor * float(var.mean()) if float(var.mean()) > 0 else noise_floor
    evals, evecs = torch.linalg.eigh(s)
    evals, evecs = evals.flip(0), evecs.flip(1)
    rest = float(evals[r:].clamp_min(0).mean())
    lam = evecs[:, :r] * (evals[:r] - rest).clamp_min(0).sqrt()
    psi = (var - (lam**2).sum(1)).clamp_min(floor)
    ll = _loglik(lam, psi, s)
    eye = torch.eye(r, dtype=torch.float64)
    converged, it = False, 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        beta, _ = _beta(lam, psi)
        sb = s @ beta.T  # (d, r)
        c = eye - beta @ lam + beta @ sb
        lam = torch.linalg.solve(c, sb.T).T  # S βᵀ C⁻¹ (C symmetric)
        psi = (var - (lam * sb).sum(1)).clamp_min(floor)
        new = _loglik(lam, psi, s)
        gain, ll = new - ll, new
        if abs(gain) < tol:
            converged = True
            break
    return FactorModel(mean, lam, psi, ll, it, converged)
