"""Criticality: the mean-field recursion of a deep MLP at initialization, its
susceptibilities, each activation's critical point, and the ``critical`` init scheme.

Notation of Roberts, Yaida & Hanin, *The Principles of Deep Learning Theory* (2022,
arXiv:2106.10165), Ch. 5 (the same recursion is Poole et al. 2016, "Exponential
expressivity in deep neural networks through transient chaos", Eq. 3, with
σ_w² = C_W, σ_b² = C_b). A layer is ``z^{ℓ+1} = b^{ℓ+1} + W^{ℓ+1} σ(z^ℓ)`` with
``W_ij ~ N(0, C_W / n_ℓ)`` and ``b_i ~ N(0, C_b)``; ``⟨f(z)⟩_K`` is the expectation over
``z ~ N(0, K)``. The definitions used here, at infinite width for one input:

- the kernel recursion (book Eq. 5.4 with Eq. 4.90's infinite-width limit)
  ``K^{ℓ+1} = C_b + C_W ⟨σ(z)²⟩_{K^ℓ}``, ``g(K) := ⟨σ(z)²⟩_K``;
- the parallel susceptibility (book Eq. 5.50), the slope of that map:
  ``χ∥(K) = C_W g'(K) = (C_W / 2K²) ⟨σ(z)² (z² − K)⟩_K = (C_W / K) ⟨z σ(z) σ'(z)⟩_K``
  (the last form by Gaussian integration by parts, used here);
- the perpendicular susceptibility (book Eq. 5.51):
  ``χ⊥(K) = C_W ⟨σ'(z)²⟩_K``; it is also the layer-to-layer factor of the mean squared
  backward gradient, ``G^ℓ = χ⊥(K^ℓ) G^{ℓ+1}`` for ``G^ℓ = E[(∂L/∂z_i^ℓ)²]`` and equal
  widths.

Criticality (book Sec. 5.2) is a fixed point ``K* = C_b + C_W g(K*)`` with
``χ∥(K*) = χ⊥(K*) = 1``. :func:`critical_point` solves it: ``χ∥ = χ⊥`` is the 1-D
equation ``h(K) = g'(K) − ⟨σ'²⟩_K = 0``; at a root, ``C_W = 1 / ⟨σ'²⟩_{K*}`` and
``C_b = K* − C_W g(K*)`` (a variance, so it must be ≥ 0). Three universality classes
(book Sec. 5.3):

- scale-invariant (ReLU, leaky ReLU): ``h ≡ 0``, ``C_b = 0``, ``C_W = 1 / ⟨σ'²⟩``; any K
  is a fixed point (``K_star`` is ``None``);
- ``K* = 0`` (tanh, sin): ``σ(0) = 0``, ``σ'(0) ≠ 0``, ``C_W = 1 / σ'(0)²``, ``C_b = 0``,
  and small kernels shrink (``C_W g(K) < K``), so K flows to 0 as a power law;
- a nonzero K* (GELU, SWISH): a positive root of ``h`` with ``C_b ≥ 0``.

An activation with none of these is a one-line :class:`ConfigError`.

Expectations are Gauss-Hermite quadrature with probabilists' nodes
(:func:`numpy.polynomial.hermite_e.hermegauss`; an even node count, so the kink of ReLU at
0 falls between nodes and ``⟨relu²⟩_K = K/2`` comes out exact).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from weightlab.errors import ConfigError
from weightlab.init.registry import InitContext, Initializer, _normal, register

QUAD_NODES = 160  # Gauss-Hermite nodes (even): exact for polynomials of degree < 320
K_GRID = (1e-3, 1e2)  # where critical_point looks for a nonzero K*
_SCALE_INV_TOL = 1e-9


@lru_cache(maxsize=8)
def _nodes(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return torch.from_numpy(x), torch.from_numpy(w / math.sqrt(2 * math.pi))


def _gelu(z: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(z)


def _relu(z: torch.Tensor) -> torch.Tensor:
    return torch.relu(z)


_GELU_PDF = 1.0 / math.sqrt(2 * math.pi)

NAMED: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable]] = {
    "relu": (_relu, lambda z: (z > 0).to(z.dtype)),
    "tanh": (torch.tanh, lambda z: 1 - torch.tanh(z) ** 2),
    "sin": (torch.sin, torch.cos),
    # GELU(z) = z Φ(z) (erf form, torch's default): σ' = Φ(z) + z φ(z)
    "gelu": (
        _gelu,
        lambda z: 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * _GELU_PDF * torch.exp(-z * z / 2),
    ),
}


@dataclass(frozen=True)
class Activation:
    """An activation for the mean field: its name, ``fn`` (float64 tensor -> tensor) and
    its derivative (analytic for the named ones, autograd for a callable)."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    deriv: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.fn(z)

    def derivative(self, z: torch.Tensor) -> torch.Tensor:
        if self.deriv is not None:
            return self.deriv(z)
        with torch.enable_grad():
            zz = z.detach().clone().requires_grad_(True)
            (d,) = torch.autograd.grad(self.fn(zz).sum(), zz)
        return d.detach()


def as_activation(activation: str | Callable | Activation) -> Activation:
    """An :class:`Activation` from a name (relu, tanh, sin, gelu), a callable on tensors
    (named by its ``__name__``) or an :class:`Activation`."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        key = activation.lower()
        if key not in NAMED:
            raise ConfigError(
                f"unknown activation {activation!r} for the mean field; use one of "
                f"{', '.join(NAMED)} or pass a callable"
            )
        fn, d = NAMED[key]
        return Activation(key, fn, d)
    if callable(activation):
        name = getattr(activation, "__name__", None) or type(activation).__name__
        return Activation(str(name), activation)
    raise ConfigError(
        f"activation must be a name or a callable, got {type(activation).__name__}; "
        "pass e.g. activation='tanh'"
    )


def gauss_expect(
    f: Callable[[torch.Tensor], torch.Tensor], K, nodes: int = QUAD_NODES
) -> np.ndarray:
    """``⟨f(z)⟩_K`` for ``z ~ N(0, K)``, for each K of an array (float64, Gauss-Hermite)."""
    k = np.atleast_1d(np.asarray(K, dtype=np.float64))
    if np.any(k < 0) or not np.all(np.isfinite(k)):
        raise ValueError(f"kernel values must be finite and >= 0, got {K!r}")
    x, w = _nodes(int(nodes))
    z = torch.from_numpy(np.sqrt(k))[:, None] * x[None, :]
    vals = f(z).to(torch.float64)
    return (vals @ w).numpy()


def g_of_k(act, K, nodes: int = QUAD_NODES) -> np.ndarray:
    """``g(K) = ⟨σ(z)²⟩_K``."""
    a = as_activation(act)
    return gauss_expect(lambda z: a(z) ** 2, K, nodes)


def chi_parallel(act, K, C_W: float, nodes: int = QUAD_NODES) -> np.ndarray:
    """``χ∥(K) = (C_W/K) ⟨z σ(z) σ'(z)⟩_K`` (book Eq. 5.50); at ``K = 0`` its limit
    ``C_W σ'(0)²`` (plus ``C_W σ(0)σ''(0)``, ignored: finite differences are not used)."""
    a = as_activation(act)
    k = np.atleast_1d(np.asarray(K, dtype=np.float64))
    e = gauss_expect(lambda z: z * a(z) * a.derivative(z), k, nodes)
    safe = np.where(k > 0, k, 1.0)
    zero = C_W * float(a.derivative(torch.zeros(1, dtype=torch.float64))[0]) ** 2
    return np.where(k > 0, C_W * e / safe, zero)


def chi_perp(act, K, C_W: float, nodes: int = QUAD_NODES) -> np.ndarray:
    """``χ⊥(K) = C_W ⟨σ'(z)²⟩_K`` (book Eq. 5.51)."""
    a = as_activation(act)
    return C_W * gauss_expect(lambda z: a.derivative(z) ** 2, K, nodes)


@dataclass(frozen=True)
class MeanField:
    """The infinite-width prediction for one input over ``L`` layers (1-based ℓ is index
    ℓ-1): ``K[ℓ]`` the kernel, ``chi_par[ℓ]``/``chi_perp[ℓ]`` at ``K[ℓ]``, and ``G[ℓ]`` the
    mean squared backward gradient at layer ℓ relative to the last layer's
    (``G[L] = 1``, ``G[ℓ] = χ⊥(K[ℓ]) G[ℓ+1]``)."""

    activation: str
    C_W: float
    C_b: float
    K: tuple[float, ...]
    chi_par: tuple[float, ...]
    chi_perp: tuple[float, ...]
    G: tuple[float, ...]


def mean_field(act, C_W: float, C_b: float, K1: float, depth: int) -> MeanField:
    """Iterate ``K^{ℓ+1} = C_b + C_W g(K^ℓ)`` from ``K^1 = K1`` for ``depth`` layers,
    with χ∥, χ⊥ at each layer and the backward gradient ratios."""
    if depth < 1:
        raise ConfigError(f"depth must be >= 1, got {depth}")
    a = as_activation(act)
    ks = [float(K1)]
    for _ in range(depth - 1):
        ks.append(float(C_b + C_W * g_of_k(a, ks[-1])[0]))
    k = np.array(ks)
    cpar = chi_parallel(a, k, C_W)
    cperp = chi_perp(a, k, C_W)
    g = np.ones(depth)
    for i in range(depth - 2, -1, -1):
        g[i] = cperp[i] * g[i + 1]
    return MeanField(
        a.name,
        float(C_W),
        float(C_b),
        tuple(ks),
        tuple(float(v) for v in cpar),
        tuple(float(v) for v in cperp),
        tuple(float(v) for v in g),
    )


@dataclass(frozen=True)
class CriticalPoint:
    """``C_W``, ``C_b`` and the fixed point ``K_star`` at which ``χ∥ = χ⊥ = 1``
    (``None`` for a scale-invariant activation, where every K is fixed); ``universality``
    names the class (``scale-invariant``, ``K*=0``, ``nonzero K*``)."""

    C_W: float
    C_b: float
    K_star: float | None
    universality: str


def _h(a: Activation, K) -> np.ndarray:
    """``g'(K) − ⟨σ'²⟩_K``: zero exactly where ``χ∥ = χ⊥``."""
    return chi_parallel(a, K, 1.0) - chi_perp(a, K, 1.0)


def _solve(a: Activation) -> CriticalPoint:
    from scipy.optimize import brentq

    probe = np.array([0.25, 1.0, 4.0])
    scale = np.abs(chi_perp(a, probe, 1.0)) + 1e-300
    sigma0 = float(a(torch.zeros(1, dtype=torch.float64))[0])
    if np.all(np.abs(_h(a, probe)) <= 1e6 * _SCALE_INV_TOL * scale) and abs(sigma0) < 1e-12:
        c_w = float(1.0 / chi_perp(a, 1.0, 1.0)[0])
        return CriticalPoint(c_w, 0.0, None, "scale-invariant")
    # a nonzero K*: sign changes of h on a log grid, refined by Brent's method
    grid = np.geomspace(*K_GRID, 241)
    hv = _h(a, grid)
    roots = []
    for lo, hi, f_lo, f_hi in zip(grid[:-1], grid[1:], hv[:-1], hv[1:], strict=True):
        if np.isfinite(f_lo) and np.isfinite(f_hi) and f_lo * f_hi < 0:
            k = brentq(lambda t: float(_h(a, t)[0]), lo, hi, xtol=1e-14, rtol=1e-13)
            perp = float(chi_perp(a, k, 1.0)[0])
            if perp <= 0:
                continue
            c_w = 1.0 / perp
            c_b = k - c_w * float(g_of_k(a, k)[0])
            if c_b >= -1e-12:
                roots.append(CriticalPoint(c_w, max(c_b, 0.0), float(k), "nonzero K*"))
    # K* = 0: σ(0) = 0, σ'(0) ≠ 0, and small kernels shrink under C_W = 1/σ'(0)²
    d0 = float(a.derivative(torch.zeros(1, dtype=torch.float64))[0])
    if abs(sigma0) < 1e-12 and abs(d0) > 1e-12:
        c_w = 1.0 / d0**2
        small = np.array([1e-3, 1e-2])
        if np.all(c_w * g_of_k(a, small) < small):
            return CriticalPoint(c_w, 0.0, 0.0, "K*=0")
    if roots:
        return roots[0]
    raise ConfigError(
        f"criticality for an activation with no critical point found ({a.name}: no K in "
        f"[{K_GRID[0]:g}, {K_GRID[1]:g}] or K=0 with chi_par = chi_perp = 1 and C_b >= 0); "
        "pass C_W= and C_b= explicitly or use another scheme"
    )


_CACHE: dict[str, CriticalPoint] = {}


def critical_point(activation: str | Callable | Activation) -> CriticalPoint:
    """The critical ``(C_W, C_b, K*)`` of an activation, solved from χ∥ = χ⊥ = 1 at a
    fixed point (module docstring). Named activations are cached. Known answers (the
    issue's table, from the solver): ReLU ``(2, 0, None)``; tanh and sin ``(1, 0, 0)``;
    GELU ``(1.983, 0.173, 3.56)``. No critical point: a one-line :class:`ConfigError`."""
    a = as_activation(activation)
    cacheable = isinstance(activation, str)
    if cacheable and a.name in _CACHE:
        return _CACHE[a.name]
    cp = _solve(a)
    if cacheable:
        _CACHE[a.name] = cp
    return cp


def _check_variance(name: str, value) -> float | None:
    if value is None:
        return None
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


@register("critical")
class Critical(Initializer):
    """Initialization at criticality (book Sec. 5.2): ``W ~ N(0, C_W / fan_in)``,
    ``b ~ N(0, C_b)`` with ``(C_W, C_b)`` from :func:`critical_point` of the context's
    activation (or of ``activation=`` given here); ``C_W=`` / ``C_b=`` override either.
    Without an activation both overrides are required."""

    def __init__(self, C_W: float | None = None, C_b: float | None = None, activation=None):  # noqa: N803
        self.C_W = _check_variance("C_W", C_W)
        self.C_b = _check_variance("C_b", C_b)
        if self.C_W == 0:
            raise ConfigError("C_W must be > 0 (a zero weight variance kills every signal)")
        self.activation = activation

    def values(self, ctx: InitContext) -> tuple[float, float]:
        """``(C_W, C_b)`` for this weight."""
        if self.C_W is not None and self.C_b is not None:
            return self.C_W, self.C_b
        act = self.activation if self.activation is not None else ctx.activation
        if act is None:
            raise ConfigError(
                f"the critical scheme needs the activation of {ctx.name}: pass activation= "
                "(e.g. initialize(model, 'critical', activation='tanh')) or both C_W= and C_b="
            )
        cp = critical_point(act)
        return (
            self.C_W if self.C_W is not None else cp.C_W,
            self.C_b if self.C_b is not None else cp.C_b,
        )

    def weight(self, shape, ctx):
        c_w, _ = self.values(ctx)
        return _normal(shape, math.sqrt(c_w / max(ctx.fan_in, 1)), ctx.generator, ctx.dtype)

    def bias(self, shape, ctx):
        _, c_b = self.values(ctx)
        if c_b == 0:
            return torch.zeros(tuple(shape), dtype=torch.float64)
        return _normal(shape, math.sqrt(c_b), ctx.generator, ctx.dtype)


__all__ = [
    "Activation",
    "Critical",
    "CriticalPoint",
    "MeanField",
    "as_activation",
    "chi_parallel",
    "chi_perp",
    "critical_point",
    "g_of_k",
    "gauss_expect",
    "mean_field",
]
