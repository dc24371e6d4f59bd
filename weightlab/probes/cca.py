"""Canonical correlation analysis of representations: CCA, SVCCA and PWCCA.

For representations ``X (n, d₁)`` and ``Y (n, d₂)`` of the same ``n`` examples (columns:
neurons, centred over examples):

- **CCA** (Hotelling 1936): the canonical correlations ``ρ₁ ≥ … ≥ ρ_k`` are the singular
  values of ``Q_Xᵀ Q_Y``, with ``Q_X``, ``Q_Y`` orthonormal bases of the column spaces of
  ``X`` and ``Y`` (``k = min(rank X, rank Y)``; Björck & Golub 1973). Invariant to any
  invertible linear map of either representation. When ``rank X + rank Y ≥ n`` some
  correlations are 1 whatever the data (the column spaces must intersect), so the
  probes refuse that case with a one-line :class:`ConfigError`.
- **SVCCA** (Raghu et al. 2017, "SVCCA: Singular Vector Canonical Correlation Analysis for
  Deep Learning Dynamics and Interpretability", Sec. 2): first reduce each representation
  to its top singular directions — the fewest that keep ``variance`` (default 0.99) of
  the total variance ``Σ σᵢ²`` — or to ``dims`` directions, then CCA; the similarity is the
  mean canonical correlation ``(1/k) Σ ρᵢ``.
- **PWCCA** (Morcos, Raghu & Bengio 2018, "Insights on representational similarity in
  neural networks with canonical correlation", Sec. 3.2, Eq. 2): the projection-weighted
  mean ``Σ αᵢ ρᵢ / Σ αᵢ`` with ``αᵢ = Σ_j |⟨hᵢ, z_j⟩|``, where ``hᵢ`` is the ``i``-th
  canonical variate of one representation (unit norm over examples) and ``z_j`` its
  ``j``-th neuron's centred activation vector: directions that account for more of the
  representation weigh more. The weights come from ``side``: "x", "y" or (default)
  "smaller", the representation with fewer kept dimensions (ties: x). No SVD step unless
  ``variance``/``dims`` is given.

Every function takes and returns tensors and is differentiable (through
``torch.linalg.svd``; the number of kept directions is a discrete choice made on the
detached values, and the gradient of the singular vectors is ill-conditioned when
singular values nearly coincide). :func:`cca_similarity` wraps them in a typed
:class:`CCAResult` with the features stated. Computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weightlab.errors import ConfigError
from weightlab.probes.cka import FEATURES

RANK_RTOL = 1e-10  # singular values below this × the largest count as zero (float64)
METHODS = ("cca", "svcca", "pwcca")
SIDES = ("smaller", "x", "y")

__all__ = [
    "CCAResult",
    "canonical_correlations",
    "cca_similarity",
    "pwcca",
    "svcca",
    "svd_reduce",
]


def _centred(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ConfigError(f"{what} must be a tensor of shape (examples, ...)")
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    return x - x.mean(0, keepdim=True)


def _basis(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis ``(n, r)`` of the column space of centred ``x`` (SVD; rank by
    :data:`RANK_RTOL`)."""
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    sd = s.detach()
    r = int((sd > RANK_RTOL * sd[0]).sum()) if len(sd) and float(sd[0]) > 0 else 0
    if r == 0:
        raise ConfigError(
            "a representation is constant over the examples (rank 0); CCA needs varying features"
        )
    return u[:, :r]


def svd_reduce(
    x: torch.Tensor, *, variance: float | None = 0.99, dims: int | None = None
) -> torch.Tensor:
    """Raghu et al. 2017, Sec. 2, step 1: the centred ``x`` projected on its top singular
    directions ``U_k S_k`` ``(n, k)``, ``k`` the fewest keeping ``variance`` of ``Σσᵢ²``, or
    ``k = dims`` (``dims`` wins when both are given)."""
    if variance is None and dims is None:
        raise ConfigError("give variance= (a fraction in (0, 1]) or dims= (directions to keep)")
    if dims is None and not 0 < variance <= 1:
        raise ConfigError(f"variance must be in (0, 1], got {variance}")
    x = _centred(x, "x")
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    if dims is not None:
        if not 1 <= dims <= len(s):
            raise ConfigError(f"dims must be in [1, {len(s)}] for this representation, got {dims}")
        k = int(dims)
    else:
        energy = s.detach().square()
        frac = energy.cumsum(0) / energy.sum().clamp_min(torch.finfo(torch.float64).tiny)
        k = int((frac < variance - 1e-12).sum()) + 1
        k = min(k, len(s))
    return u[:, :k] * s[:k]


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _centred(x, "x"), _centred(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ConfigError(
            f"x and y must hold the same examples: got {x.shape[0]} and {y.shape[0]} rows"
        )
    return x, y


def _cca(x: torch.Tensor, y: torch.Tensor):
    """(ρ (k,), Q_X U (n, k), Q_Y V (n, k)) for centred x, y."""
    n = x.shape[0]
    qx, qy = _basis(x), _basis(y)
    if qx.shape[1] + qy.shape[1] >= n:
        raise ConfigError(
            f"CCA needs more examples than the two representations' dimensions together "
            f"(ranks {qx.shape[1]} + {qy.shape[1]} >= n = {n}: some correlations would be 1 "
            "by construction); pass more examples or reduce with svcca(dims=...)"
        )
    u, rho, vh = torch.linalg.svd(qx.T @ qy, full_matrices=False)
    k = len(rho)
    return rho.clamp(0.0, 1.0), qx @ u[:, :k], qy @ vh[:k].T


def canonical_correlations(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The canonical correlations ``ρ₁ ≥ … ≥ ρ_k`` of ``x`` and ``y`` (float64, differentiable)."""
    x, y = _check_pair(x, y)
    return _cca(x, y)[0]


def svcca(
    x: torch.Tensor, y: torch.Tensor, *, variance: float | None = 0.99, dims: int | None = None
) -> torch.Tensor:
    """SVCCA similarity (Raghu et al. 2017): mean canonical correlation after reducing each
    representation to the singular directions keeping ``variance`` (or ``dims`` of them)."""
    x, y = _check_pair(x, y)
    return _cca(
        svd_reduce(x, variance=variance, dims=dims), svd_reduce(y, variance=variance, dims=dims)
    )[0].mean()


def _pwcca_parts(x, y, side):
    if side not in SIDES:
        raise ConfigError(f"unknown side {side!r}; choose one of: {', '.join(SIDES)}")
    rho, hx, hy = _cca(x, y)
    use_x = side == "x" or (side == "smaller" and x.shape[1] <= y.shape[1])
    h, z = (hx, x) if use_x else (hy, y)
    alpha = (h.T @ z).abs().sum(1)
    return rho, alpha / alpha.sum()


def pwcca(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    side: str = "smaller",
    variance: float | None = None,
    dims: int | None = None,
) -> torch.Tensor:
    """PWCCA similarity (Morcos et al. 2018, Eq. 2): ``Σ αᵢ ρᵢ`` with the normalised
    projection weights ``αᵢ ∝ Σ_j |⟨hᵢ, z_j⟩|`` of ``side``'s neurons on its canonical
    variates. ``variance``/``dims`` first reduce both by SVD (as in SVCCA)."""
    x, y = _check_pair(x, y)
    if variance is not None or dims is not None:
        x = svd_reduce(x, variance=variance, dims=dims)
        y = svd_reduce(y, variance=variance, dims=dims)
    rho, alpha = _pwcca_parts(x, y, side)
    return (alpha * rho).sum()


@dataclass(frozen=True)
class CCAResult:
    """A CCA-family similarity with its canonical correlations (descending), PWCCA's
    weights (else ``None``), the kept dimensions per representation and the features."""

    method: str
    value: float
    correlations: tuple[float, ...]
    weights: tuple[float, ...] | None
    dims: tuple[int, int]
    n: int
    features: str
    variance: float | None = None

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["correlations"] = list(self.correlations)
        d["weights"] = None if self.weights is None else list(self.weights)
        d["dims"] = list(self.dims)
        return d


def cca_similarity(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str = "svcca",
    variance: float | None = 0.99,
    dims: int | None = None,
    side: str = "smaller",
    features: str = "flattened",
) -> CCAResult:
    """``method`` ("cca": mean canonical correlation, "svcca", "pwcca") as a typed result.
    ``variance``/``dims`` apply to SVCCA (PWCCA: only when given explicitly with
    ``method="pwcca"``; plain CCA never reduces)."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if features not in FEATURES:
        raise ConfigError(f"unknown features {features!r}; choose one of: {', '.join(FEATURES)}")
    with torch.no_grad():
        x, y = _check_pair(x, y)
        if method == "svcca" or (method == "pwcca" and dims is not None):
            x = svd_reduce(x, variance=variance, dims=dims)
            y = svd_reduce(y, variance=variance, dims=dims)
        weights = None
        if method == "pwcca":
            rho, alpha = _pwcca_parts(x, y, side)
            value = float((alpha * rho).sum())
            weights = tuple(float(a) for a in alpha)
        else:
            rho = _cca(x, y)[0]
            value = float(rho.mean())
    return CCAResult(
        method=method,
        value=value,
        correlations=tuple(float(r) for r in rho),
        weights=weights,
        dims=(int(x.shape[1]), int(y.shape[1])),
        n=int(x.shape[0]),
        features=features,
        variance=variance if method == "svcca" and dims is None else None,
    )
