"""Centered kernel alignment (CKA): linear and RBF, biased and debiased, all layer pairs at
once, and the minibatch streaming estimator.

Definitions (``K``, ``L`` are ``n × n`` Gram matrices of two representations of the same
``n`` examples, ``H = I − 11ᵀ/n`` the centring matrix):

- **HSIC_b** (Gretton et al. 2005, "Measuring Statistical Dependence with Hilbert-Schmidt
  Norms", Eq. 4): ``HSIC_b(K, L) = tr(K H L H) / (n − 1)²``; biased, of order ``1/n``.
- **HSIC_u** (Song et al. 2012, "Feature Selection via Dependence Maximization", JMLR,
  Eq. 5): with ``K̃``, ``L̃`` the Grams with their diagonals set to zero,
  ``HSIC_u = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1 / ((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3))``,
  an unbiased estimator of the population HSIC; it needs ``n > 3``. For the linear
  kernel the population HSIC is ``‖Cov(x, y)‖_F²`` (the squared Frobenius norm of the
  cross-covariance), e.g. ``‖M‖_F²`` for ``x ~ N(0, I)``, ``y = Mᵀx + e``.
- **CKA** (Kornblith et al. 2019, "Similarity of Neural Network Representations
  Revisited", Eq. 3): ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``. *Biased* CKA uses
  HSIC_b; *debiased* CKA uses HSIC_u in all three places. Debiased CKA is a ratio of
  unbiased estimators and is **not itself unbiased**; it has much less bias than the
  biased estimator at small ``n`` (tested), and it is undefined when a self-HSIC_u is
  ``≤ 0`` (possible at small ``n`` or for nearly constant features).
- **Linear CKA** (Kornblith et al. 2019, Eq. 5, feature form):
  ``‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F)`` for column-centred ``X``, ``Y``; invariant to
  orthogonal transforms and isotropic scaling of either representation. The debiased
  linear estimator is evaluated in the feature space too when that is cheaper
  (``n·d₁·d₂ + n(d₁² + d₂²)`` against ``n²(d₁ + d₂)``): for centred features
  ``1ᵀK̃1 = −Σ_i ‖x_i‖²`` and ``K̃1 = −(‖x_i‖²)_i``, so every term of Eq. 5 follows from
  ``‖XᵀY‖_F²`` and the row norms (equal to the Gram form, tested).
- **RBF CKA** (Kornblith et al. 2019, Sec. 3, "RBF kernel"):
  ``k(x, x') = exp(−‖x − x'‖² / (2σ²))`` with ``σ = sigma_frac × median_{i<j} ‖x_i − x_j‖``
  (the paper reports σ = 0.2, 0.4 and 0.8 of the median distance; the default here is
  ``0.8``). The bandwidth is computed from the data and held constant (detached) under
  differentiation.
- **Minibatch CKA** (Nguyen, Raghu & Kornblith 2021, "Do Wide and Deep Networks Learn the
  Same Things?", Eq. 3): ``mean_i HSIC_u(K_i, L_i) / sqrt(mean_i HSIC_u(K_i, K_i) ·
  mean_i HSIC_u(L_i, L_i))`` over minibatches ``i`` of the same examples, every batch
  weighted equally (as torch-cka does); HSIC_u is averaged *before* the ratio.

Every CKA here is computed in float64 from Grams formed in the features' own dtype (or
``dtype``). :func:`linear_cka`, :func:`rbf_cka` and :func:`cka_tensor` are differentiable
(tensor in, tensor out: ``1 − linear_cka(x, y)`` is a representational-alignment loss);
they raise a one-line :class:`ConfigError` where the value is undefined. :func:`cka`,
:func:`cka_matrix` and :class:`MinibatchCKA` return typed results that carry
``None`` and the reason instead (never NaN, never a clamp). Features are stated in every
typed result: ``"flattened"`` (each example's tensor flattened) or ``"pooled"`` /
``"sentence"`` (see :mod:`weightlab.probes.features`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from weightlab.errors import ConfigError, DataError

KERNELS = ("linear", "rbf")
ESTIMATORS = ("biased", "debiased")
FEATURES = ("flattened", "pooled", "sentence")
DEFAULT_SIGMA_FRAC = 0.8
MIN_EXAMPLES = 4
ROUNDING = 64  # self-HSIC floor in units of eps × the trace term (see _self_floor)

__all__ = [
    "CKAMatrix",
    "CKAResult",
    "MinibatchCKA",
    "cka",
    "cka_matrix",
    "cka_tensor",
    "gram",
    "hsic",
    "hsic_pairs",
    "linear_cka",
    "linear_gram",
    "rbf_cka",
    "rbf_gram",
]


# --------------------------------------------------------------------------- checks


def _check_choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")
    return value


def _check_n(n: int) -> None:
    if n < MIN_EXAMPLES:
        raise ConfigError(
            f"CKA needs at least {MIN_EXAMPLES} examples (the debiased estimator needs n > 3), "
            f"got {n}; pass more examples"
        )


def _matrix(x: torch.Tensor, what: str = "features") -> torch.Tensor:
    """``(n, ...)`` -> ``(n, d)``: each example's tensor flattened."""
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"{what} must be a torch.Tensor of shape (examples, ...)")
    if x.ndim < 2:
        raise ConfigError(
            f"{what} must have shape (examples, ...), got {tuple(x.shape)}; add a feature axis"
        )
    return x.reshape(x.shape[0], -1)


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _matrix(x, "x"), _matrix(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ConfigError(
            f"x and y must hold the same examples: got {x.shape[0]} and {y.shape[0]} rows"
        )
    _check_n(x.shape[0])
    return x, y


def _float(x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None:
        return x.to(dtype)
    return x if x.is_floating_point() else x.to(torch.float32)


# --------------------------------------------------------------------------- Grams


def linear_gram(x: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``X Xᵀ`` of the column-centred features ``(n, ...)`` (flattened per example), in
    ``dtype`` (default: the features' own floating dtype)."""
    x = _float(_matrix(x), dtype)
    x = x - x.mean(0, keepdim=True)
    return x @ x.T


def _median_bandwidth(sq: torch.Tensor, sigma_frac: float) -> torch.Tensor:
    n = sq.shape[-1]
    iu = torch.triu_indices(n, n, 1, device=sq.device)
    med = sq.detach()[..., iu[0], iu[1]].median(-1).values.clamp_min(0).sqrt()
    return sigma_frac * med


def rbf_gram(
    x: torch.Tensor,
    *,
    sigma_frac: float = DEFAULT_SIGMA_FRAC,
    sigma: float | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RBF Gram ``exp(−‖x_i − x_j‖² / (2σ²))`` with ``σ = sigma_frac ×`` the median
    pairwise distance (Kornblith et al. 2019, Sec. 3), or the fixed bandwidth ``sigma``;
    returns ``(K, σ)``, σ detached. Raises :class:`ConfigError` when the median distance
    is 0 (at least half the pairs are repeated examples)."""
    if not sigma_frac > 0:
        raise ConfigError(
            f"sigma_frac must be > 0 (a fraction of the median distance), got {sigma_frac}"
        )
    x = _float(_matrix(x), dtype)
    sq_norm = (x * x).sum(1)
    sq = (sq_norm[:, None] + sq_norm[None, :] - 2 * (x @ x.T)).clamp_min(0)
    sq = sq - torch.diag_embed(torch.diagonal(sq))  # exact zeros on the diagonal
    if sigma is not None:
        if not sigma > 0:
            raise ConfigError(f"sigma must be > 0, got {sigma}")
        return torch.exp(-sq / (2 * sigma**2)), torch.tensor(float(sigma))
    sigma = _median_bandwidth(sq, sigma_frac)
    if not torch.isfinite(sq).all():
        raise DataError("features hold non-finite values; check the model's outputs")
    if not float(sigma) > 0:
        raise ConfigError(
            "the RBF bandwidth is 0: at least half of the pairwise distances are 0 (repeated "
            "examples); use the linear kernel or distinct examples"
        )
    return torch.exp(-sq / (2 * sigma**2)), sigma


def gram(
    x: torch.Tensor,
    kernel: str = "linear",
    *,
    sigma_frac: float = DEFAULT_SIGMA_FRAC,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The Gram matrix of ``kernel`` ("linear" or "rbf") on features ``(n, ...)``."""
    _check_choice(kernel, KERNELS, "kernel")
    if kernel == "linear":
        return linear_gram(x, dtype=dtype)
    return rbf_gram(x, sigma_frac=sigma_frac, dtype=dtype)[0]


# --------------------------------------------------------------------------- HSIC


def _offdiag(k: torch.Tensor) -> torch.Tensor:
    return k - torch.diag_embed(torch.diagonal(k, dim1=-2, dim2=-1))


def _center(k: torch.Tensor) -> torch.Tensor:
    k = k - k.mean(-1, keepdim=True)
    return k - k.mean(-2, keepdim=True)


def hsic(k: torch.Tensor, l: torch.Tensor, *, debiased: bool = False) -> torch.Tensor:  # noqa: E741
    """HSIC of Grams ``(..., n, n)`` (batched over leading axes), in float64:
    HSIC_b = ``tr(KHLH)/(n−1)²`` (Gretton et al. 2005, Eq. 4) or, with ``debiased=True``,
    HSIC_u (Song et al. 2012, Eq. 5; needs ``n > 3``)."""
    n = k.shape[-1]
    if k.shape[-2:] != (n, n) or l.shape[-2:] != (n, n):
        raise ConfigError(
            f"Grams must be square and of equal size, got {tuple(k.shape)} and {tuple(l.shape)}"
        )
    _check_n(n)
    k, l = k.to(torch.float64), l.to(torch.float64)  # noqa: E741
    if not debiased:
        return (_center(k) * _center(l)).sum((-2, -1)) / (n - 1) ** 2
    kt, lt = _offdiag(k), _offdiag(l)
    trace = (kt * lt).sum((-2, -1))
    sums = kt.sum((-2, -1)) * lt.sum((-2, -1)) / ((n - 1) * (n - 2))
    cross = (kt.sum(-1) * lt.sum(-1)).sum(-1) * 2 / (n - 2)
    return (trace + sums - cross) / (n * (n - 3))


def hsic_pairs(
    ks: torch.Tensor, ls: torch.Tensor | None = None, *, debiased: bool = False
) -> torch.Tensor:
    """HSIC of every pair of stacked Grams: ``ks (A, n, n)``, ``ls (B, n, n)`` (default
    ``ks``) -> ``(A, B)`` in float64, from one matrix product of the flattened Grams plus
    their diagonals and row sums (no centred or zero-diagonal copies): for symmetric
    ``K``, ``L``, ``tr(KHLH) = ⟨K, L⟩ − (2/n)(K1)·(L1) + (1ᵀK1)(1ᵀL1)/n²``, and Song et al.'s
    ``tr(K̃L̃) = ⟨K, L⟩ − diag(K)·diag(L)``, ``K̃1 = K1 − diag(K)``. The self-HSICs are the
    diagonal when ``ls`` is ``None``."""
    n = ks.shape[-1]
    _check_n(n)
    same = ls is None
    k = ks.to(torch.float64)
    l = k if same else ls.to(torch.float64)  # noqa: E741
    full = k.reshape(k.shape[0], -1) @ l.reshape(l.shape[0], -1).T
    krow, lrow = k.sum(-1), l.sum(-1)  # (A, n), (B, n)
    if not debiased:
        ksum, lsum = krow.sum(-1), lrow.sum(-1)
        centred = full - (krow @ lrow.T) * (2 / n) + ksum[:, None] * lsum[None, :] / n**2
        return centred / (n - 1) ** 2
    kd, ld = torch.diagonal(k, dim1=-2, dim2=-1), torch.diagonal(l, dim1=-2, dim2=-1)
    trace = full - kd @ ld.T
    krow, lrow = krow - kd, lrow - ld
    ksum, lsum = krow.sum(-1), lrow.sum(-1)
    sums = ksum[:, None] * lsum[None, :] / ((n - 1) * (n - 2))
    cross = (krow @ lrow.T) * 2 / (n - 2)
    return (trace + sums - cross) / (n * (n - 3))


def _linear_hsic_features(
    x: torch.Tensor, y: torch.Tensor, debiased: bool
) -> tuple[torch.Tensor, ...]:
    """(HSIC(x,y), HSIC(x,x), HSIC(y,y), floor_x, floor_y) of the linear kernel in the
    feature space (floors: see :func:`_self_floor`)."""
    n = x.shape[0]
    x = x.to(torch.float64) - x.to(torch.float64).mean(0, keepdim=True)
    y = y.to(torch.float64) - y.to(torch.float64).mean(0, keepdim=True)
    xy = (x.T @ y).square().sum()
    xx = (x.T @ x).square().sum()
    yy = (y.T @ y).square().sum()
    eps = ROUNDING * torch.finfo(torch.float64).eps
    if not debiased:
        c = (n - 1) ** 2
        return xy / c, xx / c, yy / c, eps * xx.detach() / c, eps * yy.detach() / c
    kx, ky = x.square().sum(1), y.square().sum(1)  # diag of the centred Grams

    def u(t: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # centred features: 1ᵀK̃1 = −Σ a, K̃1 = −a, so 1ᵀK̃L̃1 = a·b
        ab = (a * b).sum()
        return (t - ab + a.sum() * b.sum() / ((n - 1) * (n - 2)) - 2 * ab / (n - 2)) / (n * (n - 3))

    c = n * (n - 3)
    fx = eps * (xx - kx.square().sum()).detach() / c
    fy = eps * (yy - ky.square().sum()).detach() / c
    return u(xy, kx, ky), u(xx, kx, kx), u(yy, ky, ky), fx, fy


def _self_floor(k: torch.Tensor, debiased: bool, dtype: torch.dtype) -> torch.Tensor:
    """The rounding floor of a self-HSIC of Grams ``(..., n, n)`` formed in ``dtype``:
    ``ROUNDING × eps(dtype)`` times the first (trace) term of the estimator,
    ``‖K̃‖_F²/(n(n−3))`` (HSIC_u) or ``‖HKH‖_F²/(n−1)²`` (HSIC_b, which is the self-HSIC_b
    itself, so only an exactly zero one, constant features, falls below it). A self-HSIC
    at or below it is ``≤ 0`` within rounding (e.g. exactly 0 for a constant off-diagonal
    Gram, as for equidistant examples), and the CKA is undefined."""
    n = k.shape[-1]
    k = k.detach()
    eps = ROUNDING * torch.finfo(dtype).eps
    sq = torch.linalg.vector_norm(k, dim=(-2, -1), dtype=torch.float64).square()
    if debiased:
        diag = torch.diagonal(k, dim1=-2, dim2=-1).to(torch.float64).square().sum(-1)
        return eps * (sq - diag) / (n * (n - 3))
    rows = k.sum(-1, dtype=torch.float64)
    centred = sq - rows.square().sum(-1) * (2 / n) + rows.sum(-1).square() / n**2
    return eps * centred / (n - 1) ** 2


# --------------------------------------------------------------------------- tensors


def _ratio(
    hxy: torch.Tensor,
    hxx: torch.Tensor,
    hyy: torch.Tensor,
    fx: torch.Tensor,
    fy: torch.Tensor,
    what: str,
    debiased: bool,
) -> torch.Tensor:
    est = "debiased" if debiased else "biased"
    _check_finite(torch.stack([hxy.detach(), hxx.detach(), hyy.detach()]), "x or y")
    reason = _undefined_reason(float(hxx.detach()), float(hyy.detach()), float(fx), float(fy), est)
    if reason:
        raise ConfigError(f"{what} is undefined: {reason}")
    return hxy / torch.sqrt(hxx * hyy)


def _undefined_reason(
    hxx: float, hyy: float, fx: float = 0.0, fy: float = 0.0, estimator: str = "debiased"
) -> str:
    """'' when both self-HSICs exceed their rounding floors, else why the CKA is undefined."""
    name = "HSIC_u" if estimator == "debiased" else "HSIC_b"
    bad = [(s, v) for s, v, f in (("x", hxx, fx), ("y", hyy, fy)) if not v > f]
    if not bad:
        return ""
    vals = ", ".join(f"{s}: {v:.3g}" for s, v in bad)
    fix = (
        "use more examples, less uniform features or the biased estimator"
        if estimator == "debiased"
        else "the features are constant"
    )
    return f"self-{name} <= 0 within rounding ({vals}); {fix}"


def linear_cka(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    debiased: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Linear CKA of features ``x (n, d₁)``, ``y (n, d₂)`` (extra axes flattened per
    example); Kornblith et al. 2019, Eq. 5 (biased) or from HSIC_u (Song et al. 2012,
    Eq. 5) with ``debiased=True``. Differentiable; a 0-d float64 tensor (``dtype`` casts
    the result). Evaluated in the feature space or through the ``n × n`` Grams, whichever
    is cheaper. Raises :class:`ConfigError` for ``n < 4`` or a self-HSIC ≤ 0."""
    x, y = _pair(x, y)
    n, d1, d2 = x.shape[0], x.shape[1], y.shape[1]
    if n * (d1 * d2 + d1 * d1 + d2 * d2) <= n * n * (d1 + d2):
        hxy, hxx, hyy, fx, fy = _linear_hsic_features(x, y, debiased)
    else:
        k, l = linear_gram(x, dtype=torch.float64), linear_gram(y, dtype=torch.float64)  # noqa: E741
        hxy = hsic(k, l, debiased=debiased)
        hxx, hyy = hsic(k, k, debiased=debiased), hsic(l, l, debiased=debiased)
        fx, fy = (_self_floor(g, debiased, torch.float64) for g in (k, l))
    out = _ratio(hxy, hxx, hyy, fx, fy, "linear CKA", debiased)
    return out if dtype is None else out.to(dtype)


def rbf_cka(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sigma_frac: float = DEFAULT_SIGMA_FRAC,
    sigma: tuple[float, float] | None = None,
    debiased: bool = False,
) -> torch.Tensor:
    """RBF CKA (Kornblith et al. 2019, Sec. 3), σ = ``sigma_frac`` × the median pairwise
    distance of each representation (detached), or the fixed bandwidths ``sigma = (σx,
    σy)``. Differentiable; 0-d float64."""
    x, y = _pair(x, y)
    sx, sy = (None, None) if sigma is None else sigma
    k = rbf_gram(x, sigma_frac=sigma_frac, sigma=sx, dtype=torch.float64)[0]
    l = rbf_gram(y, sigma_frac=sigma_frac, sigma=sy, dtype=torch.float64)[0]  # noqa: E741
    h = lambda a, b: hsic(a, b, debiased=debiased)  # noqa: E731
    fx, fy = (_self_floor(g, debiased, torch.float64) for g in (k, l))
    return _ratio(h(k, l), h(k, k), h(l, l), fx, fy, "RBF CKA", debiased)


def cka_tensor(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    kernel: str = "linear",
    debiased: bool = False,
    sigma_frac: float = DEFAULT_SIGMA_FRAC,
) -> torch.Tensor:
    """:func:`linear_cka` or :func:`rbf_cka` by name (differentiable)."""
    _check_choice(kernel, KERNELS, "kernel")
    if kernel == "linear":
        return linear_cka(x, y, debiased=debiased)
    return rbf_cka(x, y, sigma_frac=sigma_frac, debiased=debiased)


# --------------------------------------------------------------------------- typed results


@dataclass(frozen=True)
class CKAResult:
    """One CKA value. ``value`` is ``None`` when undefined, with ``reason`` saying why.

    ``features`` states how each example's representation was formed ("flattened",
    "pooled" or "sentence"); ``batches`` is the number of minibatches averaged (1 for the
    full-batch estimator); ``sigma`` the RBF bandwidths (x, y) of the full-batch estimator.
    """

    value: float | None
    kernel: str
    estimator: str
    features: str
    n: int
    batches: int = 1
    hsic_xy: float = 0.0
    hsic_xx: float = 0.0
    hsic_yy: float = 0.0
    sigma_frac: float | None = None
    sigma: tuple[float, float] | None = None
    reason: str = ""

    @property
    def defined(self) -> bool:
        return self.value is not None

    def require(self) -> float:
        """The value, or a one-line :class:`ConfigError` with the reason if undefined."""
        if self.value is None:
            raise ConfigError(f"CKA is undefined: {self.reason}")
        return self.value

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["sigma"] = list(self.sigma) if self.sigma is not None else None
        return d


@dataclass(frozen=True)
class CKAMatrix:
    """CKA of every pair (``rows[i]``, ``cols[j]``); ``values[i][j]`` is ``None`` where
    undefined, with ``reasons[(i, j)]``. ``hsic`` holds the (averaged) cross-HSICs,
    ``self_rows`` / ``self_cols`` the (averaged) self-HSICs."""

    rows: tuple[str, ...]
    cols: tuple[str, ...]
    values: tuple[tuple[float | None, ...], ...]
    kernel: str
    estimator: str
    features: str
    n: int
    batches: int
    hsic: tuple[tuple[float, ...], ...]
    self_rows: tuple[float, ...]
    self_cols: tuple[float, ...]
    sigma_frac: float | None = None
    reasons: dict[tuple[int, int], str] = field(default_factory=dict)

    def value(self, row: str, col: str) -> float | None:
        """The CKA of layers ``row`` and ``col`` (by name)."""
        for names, name in ((self.rows, row), (self.cols, col)):
            if name not in names:
                raise ConfigError(f"no layer {name!r}; layers: {', '.join(names)}")
        return self.values[self.rows.index(row)][self.cols.index(col)]

    def tensor(self, undefined: float | None = None) -> torch.Tensor:
        """The values as a float64 tensor; raises if any is undefined unless ``undefined``
        gives the number to put there (chosen by the caller, never NaN by default)."""
        if self.reasons and undefined is None:
            (i, j), why = next(iter(self.reasons.items()))
            raise ConfigError(
                f"CKA({self.rows[i]}, {self.cols[j]}) is undefined: {why}; pass undefined="
            )
        fill = 0.0 if undefined is None else undefined
        return torch.tensor(
            [[fill if v is None else v for v in row] for row in self.values], dtype=torch.float64
        )

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "reasons"}
        d = {k: [list(r) for r in v] if k in ("values", "hsic") else v for k, v in d.items()}
        d["rows"], d["cols"] = list(self.rows), list(self.cols)
        d["self_rows"], d["self_cols"] = list(self.self_rows), list(self.self_cols)
        d["undefined"] = [
            {"row": self.rows[i], "col": self.cols[j], "reason": r}
            for (i, j), r in sorted(self.reasons.items())
        ]
        return d


def _estimator(estimator: str) -> bool:
    return _check_choice(estimator, ESTIMATORS, "estimator") == "debiased"


def cka(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    kernel: str = "linear",
    estimator: str = "debiased",
    features: str = "flattened",
    sigma_frac: float = DEFAULT_SIGMA_FRAC,
) -> CKAResult:
    """CKA of two representations of the same examples, as a typed :class:`CKAResult`
    (undefined -> ``value=None`` with the reason). ``features`` names how the
    representations were formed (inputs with more than 2 axes are flattened per example,
    which is "flattened")."""
    _check_choice(kernel, KERNELS, "kernel")
    _check_choice(features, FEATURES, "features")
    debiased = _estimator(estimator)
    x, y = _pair(x, y)
    with torch.no_grad():
        sigma = None
        if kernel == "linear":
            k, l = linear_gram(x, dtype=torch.float64), linear_gram(y, dtype=torch.float64)  # noqa: E741
        else:
            k, sx = rbf_gram(x, sigma_frac=sigma_frac, dtype=torch.float64)
            l, sy = rbf_gram(y, sigma_frac=sigma_frac, dtype=torch.float64)  # noqa: E741
            sigma = (float(sx), float(sy))
        hxy, hxx, hyy = (float(hsic(a, b, debiased=debiased)) for a, b in ((k, l), (k, k), (l, l)))
        fx, fy = (float(_self_floor(g, debiased, torch.float64)) for g in (k, l))
        _check_finite(torch.tensor([hxy, hxx, hyy]), "x or y")
    reason = _undefined_reason(hxx, hyy, fx, fy, estimator)
    return CKAResult(
        value=None if reason else hxy / (hxx * hyy) ** 0.5,
        kernel=kernel,
        estimator=estimator,
        features=features,
        n=x.shape[0],
        hsic_xy=hxy,
        hsic_xx=hxx,
        hsic_yy=hyy,
        sigma_frac=sigma_frac if kernel == "rbf" else None,
        sigma=sigma,
        reason=reason,
    )


def _named(
    feats: Mapping[str, torch.Tensor] | Sequence[torch.Tensor], what: str
) -> tuple[tuple[str, ...], list[torch.Tensor]]:
    if isinstance(feats, Mapping):
        names, tensors = tuple(feats), list(feats.values())
    else:
        tensors = list(feats)
        names = tuple(f"{what}{i}" for i in range(len(tensors)))
    if not tensors:
        raise ConfigError(f"no {what} features given; pass at least one layer's features")
    return names, tensors


def _stack_grams(
    names: tuple[str, ...],
    tensors: list[torch.Tensor],
    kernel: str,
    sigma_frac: float,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    """The layers' Grams stacked ``(L, n, n)``. Non-finite features are caught on the
    linear Gram (a NaN or inf entry reaches its row), which is ``n/d`` times cheaper than
    scanning the features; before the RBF Gram, whose median would hide them."""
    n = {t.shape[0] for t in tensors}
    if len(n) != 1:
        raise ConfigError(f"every layer must hold the same examples; got row counts {sorted(n)}")
    _check_n(n.pop())
    grams = []
    for name, t in zip(names, tensors, strict=True):
        if kernel == "rbf":
            _check_finite(t, name)
        k = gram(t, kernel, sigma_frac=sigma_frac, dtype=dtype)
        if kernel == "linear":
            _check_finite(k, name)
        grams.append(k)
    return torch.stack(grams)


class MinibatchCKA:
    """Streaming CKA of every layer pair (Nguyen, Raghu & Kornblith 2021, Eq. 3): feed the
    features of each minibatch with :meth:`update`; :meth:`result` divides the HSICs
    averaged over minibatches (each batch weighted equally, as in the paper and
    torch-cka). ``estimator="debiased"`` (HSIC_u, the paper's) or ``"biased"`` (HSIC_b
    averaged the same way). Each update forms every layer's Gram once and all pairs in one
    matrix product. With ``cols`` absent, the pairs are the rows' own layers (an ``L × L``
    matrix, self-HSICs shared). The RBF kernel uses each batch's own median bandwidth."""

    def __init__(
        self,
        *,
        kernel: str = "linear",
        estimator: str = "debiased",
        features: str = "flattened",
        sigma_frac: float = DEFAULT_SIGMA_FRAC,
        gram_dtype: torch.dtype | None = None,
    ) -> None:
        self.kernel = _check_choice(kernel, KERNELS, "kernel")
        self.estimator = estimator
        self.debiased = _estimator(estimator)
        self.features = _check_choice(features, FEATURES, "features")
        self.sigma_frac = float(sigma_frac)
        self.gram_dtype = gram_dtype
        self.rows: tuple[str, ...] | None = None
        self.cols: tuple[str, ...] | None = None
        self.n = 0
        self.batches = 0
        self._sums: dict[str, torch.Tensor] = {}

    def update(
        self,
        rows: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
        cols: Mapping[str, torch.Tensor] | Sequence[torch.Tensor] | None = None,
    ) -> None:
        """Add one minibatch: ``rows`` (and ``cols``) map layer names to ``(b, ...)``
        features of the same ``b ≥ 4`` examples."""
        rnames, rts = _named(rows, "layer")
        same = cols is None
        cnames, cts = (rnames, rts) if same else _named(cols, "layer")
        if self.rows is None:
            self.rows, self.cols, self._same = rnames, cnames, same
        elif (rnames, cnames) != (self.rows, self.cols) or same != self._same:
            raise ConfigError("every minibatch must give the same layers in the same order")
        with torch.no_grad():
            ks = _stack_grams(rnames, rts, self.kernel, self.sigma_frac, self.gram_dtype)
            ls = (
                None
                if same
                else _stack_grams(cnames, cts, self.kernel, self.sigma_frac, self.gram_dtype)
            )
            if ls is not None and ls.shape[-1] != ks.shape[-1]:
                raise ConfigError(
                    f"rows and cols must hold the same examples; got {ks.shape[-1]} and "
                    f"{ls.shape[-1]} per batch"
                )
            d = self.debiased
            if same:
                cross = hsic_pairs(ks, debiased=d)
                srow, scol = torch.diagonal(cross).clone(), torch.diagonal(cross).clone()
                frow = _self_floor(ks, d, ks.dtype)
                fcol = frow.clone()
            else:
                cross = hsic_pairs(ks, ls, debiased=d)
                srow, scol = hsic(ks, ks, debiased=d), hsic(ls, ls, debiased=d)
                frow, fcol = _self_floor(ks, d, ks.dtype), _self_floor(ls, d, ls.dtype)
        parts = {"cross": cross, "srow": srow, "scol": scol, "frow": frow, "fcol": fcol}
        if not self._sums:
            self._sums = parts
        else:
            for key, value in parts.items():
                self._sums[key] += value
        self.n += ks.shape[-1]
        self.batches += 1

    def result(self) -> CKAMatrix:
        """The CKA matrix from the HSICs averaged so far (undefined entries carry reasons)."""
        if not self._sums:
            raise ConfigError("no minibatch was added; call update() with features first")
        b = self.batches
        return _matrix_result(
            self.rows,
            self.cols,
            {k: v.cpu() / b for k, v in self._sums.items()},
            kernel=self.kernel,
            estimator=self.estimator,
            features=self.features,
            n=self.n,
            batches=b,
            sigma_frac=self.sigma_frac if self.kernel == "rbf" else None,
        )


def _matrix_result(
    rows, cols, avg, *, kernel, estimator, features, n, batches, sigma_frac
) -> CKAMatrix:
    cross, srow, scol, frow, fcol = (avg[k] for k in ("cross", "srow", "scol", "frow", "fcol"))
    values: list[tuple[float | None, ...]] = []
    reasons: dict[tuple[int, int], str] = {}
    for i in range(len(rows)):
        row: list[float | None] = []
        for j in range(len(cols)):
            why = _undefined_reason(
                float(srow[i]), float(scol[j]), float(frow[i]), float(fcol[j]), estimator
            )
            if why:
                reasons[(i, j)] = why
                row.append(None)
            else:
                row.append(float(cross[i, j] / torch.sqrt(srow[i] * scol[j])))
        values.append(tuple(row))
    return CKAMatrix(
        rows=tuple(rows),
        cols=tuple(cols),
        values=tuple(values),
        kernel=kernel,
        estimator=estimator,
        features=features,
        n=n,
        batches=batches,
        hsic=tuple(tuple(float(v) for v in r) for r in cross),
        self_rows=tuple(float(v) for v in srow),
        self_cols=tuple(float(v) for v in scol),
        sigma_frac=sigma_frac,
        reasons=reasons,
    )


def cka_matrix(
    rows: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
    cols: Mapping[str, torch.Tensor] | Sequence[torch.Tensor] | None = None,
    *,
    kernel: str = "linear",
    estimator: str = "debiased",
    features: str = "flattened",
    sigma_frac: float = DEFAULT_SIGMA_FRAC,
    batch_size: int | None = None,
    gram_dtype: torch.dtype | None = None,
) -> CKAMatrix:
    """CKA of every layer pair in one batched computation: the Grams of all layers are
    stacked ``(L, n, n)`` and every HSIC comes from one matrix product (an ``L × L``
    matrix when ``cols`` is absent). ``batch_size`` splits the examples into consecutive
    minibatches and gives the minibatch estimator (Nguyen et al. 2021); the last batch is
    used if it has at least 4 examples, else dropped (stated by ``n``)."""
    rnames, rts = _named(rows, "layer")
    cts = None if cols is None else _named(cols, "layer")
    n = rts[0].shape[0]
    if batch_size is None:
        batch_size = n
    if batch_size < MIN_EXAMPLES:
        _check_n(batch_size)
    acc = MinibatchCKA(
        kernel=kernel,
        estimator=estimator,
        features=features,
        sigma_frac=sigma_frac,
        gram_dtype=gram_dtype,
    )
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if stop - start < MIN_EXAMPLES and start > 0:
            break
        r = dict(zip(rnames, (t[start:stop] for t in rts), strict=True))
        c = None if cts is None else dict(zip(cts[0], (t[start:stop] for t in cts[1]), strict=True))
        acc.update(r, c)
    return acc.result()


def _check_finite(t: torch.Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        raise DataError(f"features of {name} hold non-finite values; check the model's outputs")
