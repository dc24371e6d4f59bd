"""Power-law fits of learning curves (Bahri et al., "Explaining Neural Scaling Laws": the
test loss scales as ``L(x) ≈ a·x^(−α)`` in the dataset size or model size ``x``, Eq. 1; in
the resolution-limited regimes with an irreducible part, ``L(x) = a·x^(−α) + c``).

:func:`fit_power_law` fits, with ``x`` and ``loss`` strictly positive:

- ``offset=False``: ordinary least squares of ``log L`` on ``log x``:
  ``log L = log a − α log x`` (the fitted log-log slope is ``−α``); ``r2`` is that
  regression's R² in log space; ``exponent_stderr`` its standard error of the slope
  (needs ≥ 3 points, so one residual degree of freedom).
- ``offset=True``: ``L = a·x^(−α) + c`` with ``0 ≤ c < min L``, by profiling ``c``: for
  each ``c`` the pair ``(log a, α)`` is the log-log least squares of ``L − c`` on ``x``, and
  ``c`` minimises the squared *log* residuals of the whole model, ``Σ (log L − log(a x^−α +
  c))²``, over a grid of ``c/min L`` (0 and ``1 − 10^−k`` for k from 0.05 to 6), refined by
  golden-section search between the grid's neighbours. Profiling keeps every step a linear
  regression (no starting point, no divergence), and log residuals weight every point of a
  curve spanning decades alike. Needs ≥ 4 points; ``exponent_stderr`` is conditional on the
  fitted ``c``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from weightlab.errors import ConfigError


@dataclass(frozen=True)
class PowerLawFit:
    """``loss ≈ prefactor · x^(−exponent) + offset``. ``slope = −exponent`` (the log-log
    slope); ``r2``: R² of the fit of ``log loss`` (log space); ``exponent_stderr``: OLS
    standard error of the slope (``nan`` with no residual degree of freedom); ``method``
    names the fit."""

    exponent: float
    prefactor: float
    r2: float
    offset: float
    slope: float
    exponent_stderr: float
    n_points: int
    method: str

    def predict(self, x: torch.Tensor | Sequence[float] | float) -> torch.Tensor:
        """The fitted curve at ``x`` (float64)."""
        xt = torch.as_tensor(x, dtype=torch.float64)
        return self.prefactor * xt ** (-self.exponent) + self.offset


def _positive_vector(name: str, v: torch.Tensor | Sequence[float]) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.float64).flatten()
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ConfigError(
            f"fit_power_law needs finite, strictly positive {name}; drop the points with "
            f"{name} <= 0 (got min {float(t.min()) if t.numel() else 'none'})"
        )
    return t


def _ols(lx: torch.Tensor, ly: torch.Tensor) -> tuple[float, float, float, float]:
    """``ly = c0 + c1·lx`` by least squares: ``(c0, c1, r2, stderr of c1)``."""
    n = lx.numel()
    mx, my = lx.mean(), ly.mean()
    dx, dy = lx - mx, ly - my
    sxx = float((dx * dx).sum())
    c1 = float((dx * dy).sum()) / sxx
    c0 = float(my) - c1 * float(mx)
    res = ly - (c0 + c1 * lx)
    sse, sst = float((res * res).sum()), float((dy * dy).sum())
    r2 = 1.0 - sse / sst if sst > 0 else 1.0
    se = math.sqrt(sse / (n - 2) / sxx) if n > 2 else float("nan")
    return c0, c1, r2, se


def _profile(lx: torch.Tensor, loss: torch.Tensor, c: float) -> tuple[float, tuple]:
    """Squared log residuals of the whole model at offset ``c`` and the OLS behind it."""
    c0, c1, r2, se = _ols(lx, torch.log(loss - c))
    model = torch.exp(c0 + c1 * lx) + c
    res = torch.log(loss) - torch.log(model)
    return float((res * res).sum()), (c0, c1, se)


def fit_power_law(
    x: torch.Tensor | Sequence[float],
    loss: torch.Tensor | Sequence[float],
    *,
    offset: bool = False,
) -> PowerLawFit:
    """Fit ``loss ≈ a·x^(−α)`` (or ``+ c`` with ``offset``); see the module docstring."""
    xt = _positive_vector("x", x)
    lt = _positive_vector("loss", loss)
    if xt.numel() != lt.numel():
        raise ConfigError(f"x has {xt.numel()} points but loss has {lt.numel()}; pass pairs")
    need = 4 if offset else 3
    if xt.numel() < need:
        raise ConfigError(
            f"fit_power_law needs at least {need} points{' with an offset' if offset else ''}, "
            f"got {xt.numel()}"
        )
    lx = torch.log(xt)
    if float(lx.max() - lx.min()) == 0.0:
        raise ConfigError("fit_power_law needs at least two distinct x values")
    if not offset:
        c0, c1, r2, se = _ols(lx, torch.log(lt))
        return PowerLawFit(
            exponent=-c1,
            prefactor=math.exp(c0),
            r2=r2,
            offset=0.0,
            slope=c1,
            exponent_stderr=se,
            n_points=xt.numel(),
            method="log-log least squares",
        )
    lo = float(lt.min())
    grid = [0.0] + [1.0 - 10.0 ** (-k) for k in torch.linspace(0.05, 6.0, 120).tolist()]
    scores = [_profile(lx, lt, t * lo)[0] for t in grid]
    i = min(range(len(grid)), key=lambda j: (scores[j], j))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    phi = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(60):  # golden-section search on t = c / min(loss) in [a, b]
        m1, m2 = b - phi * (b - a), a + phi * (b - a)
        if _profile(lx, lt, m1 * lo)[0] <= _profile(lx, lt, m2 * lo)[0]:
            b = m2
        else:
            a = m1
    t_best = min((grid[i], 0.5 * (a + b)), key=lambda t: _profile(lx, lt, t * lo)[0])
    c = t_best * lo
    sse, (c0, c1, se) = _profile(lx, lt, c)
    ll = torch.log(lt)
    sst = float(((ll - ll.mean()) ** 2).sum())
    return PowerLawFit(
        exponent=-c1,
        prefactor=math.exp(c0),
        r2=1.0 - sse / sst if sst > 0 else 1.0,
        offset=c,
        slope=c1,
        exponent_stderr=se,
        n_points=xt.numel(),
        method="log-log least squares with a profiled offset",
    )


__all__ = ["PowerLawFit", "fit_power_law"]
