"""Scale estimators: one scale (and, on the asymmetric grid, one integer zero point) per
group of the ``(A, G, g)`` view, computed from the weights alone.

- ``minmax``: the clipping range is the group's largest magnitude (asymmetric grid: its
  minimum and maximum, widened to include 0).
- ``percentile``: the ``p``-th percentile of ``|W|`` (asymmetric: the ``100 − p`` and ``p``
  percentiles), default 99.9, linear interpolation as ``torch.quantile``.
- ``mse``: the clipping range ``r·max|W|`` minimizing the group's squared quantization
  error over the fixed grid ``r = 1/n, 2/n, …, 1`` (default n = 100; Banner et al. 2019's
  criterion, the survey's "MSE" calibration). ``search="exhaustive"`` tries every ratio;
  ``"coarse"`` (default) tries every 10th, then every ratio within 9 of each group's best,
  which found the exhaustive minimum's error to within 1% on every layer tested.
- ``stats``: StatsQ's ``2·mean|W|`` per group (OFQ, Liu et al. 2023), recomputed at every
  forward, no gradient.
- ``meanabs``: ``mean|W|`` (XNOR-Net's binary scale, Rastegari et al. 2016).
- ``lsq``: LSQ's initial step ``2·mean|W|/√Q_max`` (Esser et al. 2020); the step is then
  learned by gradient.

Entries where ``valid`` is false (pruned weights under a mask) are ignored: stored zeros
would shrink ``mean|W|`` and the ranges.
"""

from __future__ import annotations

import math

import torch

from weightlab.errors import ConfigError
from weightlab.quant.fake import quantize_values
from weightlab.quant.levels import LevelSet, Uniform

ESTIMATORS = ("minmax", "percentile", "mse", "stats", "meanabs", "lsq")
STATIC = ("minmax", "percentile", "mse", "meanabs")
MSE_SEARCHES = ("coarse", "exhaustive")
TINY = 1e-12
_CHUNK = 1 << 18  # elements per block of the MSE search (a cache-sized block: 1 MiB float32)


def _abs(w: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    a = w.abs()
    return a if valid is None else a * valid


def absmax(w: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    return _abs(w, valid).amax(dim=-1, keepdim=True)


def mean_abs(w: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    if valid is None:
        return w.abs().mean(dim=-1, keepdim=True)
    n = valid.sum(dim=-1, keepdim=True).clamp_min(1)
    return (w.abs() * valid).sum(dim=-1, keepdim=True) / n


def _percentile(w: torch.Tensor, valid: torch.Tensor | None, p: float) -> torch.Tensor:
    x = w.to(torch.float64)
    if valid is not None:
        x = torch.where(valid.bool(), x, torch.full_like(x, float("nan")))
        out = torch.nanquantile(x, p / 100.0, dim=-1, keepdim=True)
        return torch.nan_to_num(out, nan=0.0).to(w.dtype)
    return torch.quantile(x, p / 100.0, dim=-1, keepdim=True).to(w.dtype)


def _floor(scale: torch.Tensor) -> torch.Tensor:
    return scale.clamp_min(TINY)


def range_scale(levels: LevelSet, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (and zero point on an asymmetric grid, whose range is then ``[−c, c]``) for
    the symmetric clipping range ``c``."""
    if levels.affine:
        return levels.affine_range(-c, c)
    return _floor(levels.scale_for_range(c)), None


def estimate(
    levels: LevelSet,
    w: torch.Tensor,
    method: str,
    valid: torch.Tensor | None = None,
    *,
    percentile: float = 99.9,
    mse_ratios: int = 100,
    mse_search: str = "coarse",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(scale, zero_point)`` of shape ``(A, G, 1)`` for ``w`` viewed ``(A, G, g)``;
    ``zero_point`` is None except on the asymmetric grid. No gradient flows."""
    with torch.no_grad():
        w = w.detach()
        if method == "minmax":
            if levels.affine:
                lo, hi = _minmax(w, valid)
                return levels.affine_range(lo, hi)
            return range_scale(levels, absmax(w, valid))
        if method == "percentile":
            if not 0.0 < percentile <= 100.0:
                raise ConfigError(f"the percentile must lie in (0, 100], got {percentile}")
            if levels.affine:
                lo = _percentile(w, valid, 100.0 - percentile)
                hi = _percentile(w, valid, percentile)
                return levels.affine_range(lo, hi)
            return range_scale(levels, _percentile(w.abs(), valid, percentile))
        if method == "mse":
            return mse_search_scale(levels, w, valid, mse_ratios, mse_search)
        if method == "stats":
            return range_scale(levels, 2.0 * mean_abs(w, valid))
        if method == "meanabs":
            return range_scale(levels, mean_abs(w, valid))
        if method == "lsq":
            if not isinstance(levels, Uniform):
                raise ConfigError(
                    "the LSQ scale is defined on uniform grids; use a uniform level set"
                )
            scale = 2.0 * mean_abs(w, valid) / math.sqrt(levels.qmax)
            zp = None
            if levels.affine:  # the zero point starts where min-max puts it
                zp = levels.affine_range(*_minmax(w, valid))[1]
            return _floor(scale), zp
    raise ConfigError(f"unknown scale estimator {method!r}; choose one of {', '.join(ESTIMATORS)}")


def _minmax(w: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if valid is None:
        return w.amin(dim=-1, keepdim=True), w.amax(dim=-1, keepdim=True)
    big = torch.finfo(w.dtype).max
    v = valid.bool()
    lo = torch.where(v, w, torch.full_like(w, big)).amin(dim=-1, keepdim=True)
    hi = torch.where(v, w, torch.full_like(w, -big)).amax(dim=-1, keepdim=True)
    none = ~v.any(dim=-1, keepdim=True)
    return lo.masked_fill(none, 0.0), hi.masked_fill(none, 0.0)


def mse_errors(
    levels: LevelSet,
    w: torch.Tensor,
    ratios: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Squared quantization error of each group at clipping ranges ``ratios·max|W|``.

    ``ratios`` is ``(R,)`` (the same for every group) or ``(R, A, G, 1)`` (per group);
    returns ``(R, A, G, 1)``. The ``R`` candidates are evaluated in blocks of about
    ``2^18`` elements (a block stays in cache); on uniform grids each block is computed in
    place (one allocation), with the same operations as :func:`quantize_values`, so the
    errors are bitwise the same.
    """
    m = absmax(w, valid)
    if ratios.dim() == 1:
        ratios = ratios.reshape(-1, 1, 1, 1).to(w.dtype)
    R = ratios.shape[0]
    per = max(1, _CHUNK // max(1, w.numel()))
    out = []
    for i in range(0, R, per):
        c = ratios[i : i + per] * m  # (r, A, G, 1)
        scale, zp = range_scale(levels, c)
        if isinstance(levels, Uniform):
            err = _uniform_error(levels, w, scale, zp)
        else:
            err = (quantize_values(w, levels, scale, zp) - w).square_()
        if valid is not None:
            err = err.mul_(valid)
        out.append(err.sum(dim=-1, keepdim=True))
    return torch.cat(out)


def _uniform_error(
    levels: Uniform, w: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor | None
) -> torch.Tensor:
    """``(quantize_values(w) − w)²`` on a uniform grid, in one buffer: ``w·(1/s)``,
    rounded (half to even), ``+ z``, clamped, ``− z``, ``·s``, ``− w``, squared."""
    t = w * (1.0 / scale)
    t.round_()
    if zp is not None:
        t.add_(zp)
    t.clamp_(levels.qmin, levels.qmax)
    if zp is not None:
        t.sub_(zp)
    return t.mul_(scale).sub_(w).square_()


def mse_search_scale(
    levels: LevelSet,
    w: torch.Tensor,
    valid: torch.Tensor | None = None,
    n: int = 100,
    search: str = "coarse",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The MSE-optimal clipping range over ``r = 1/n … 1`` (see the module doc)."""
    if search not in MSE_SEARCHES:
        raise ConfigError(f"mse search must be one of {', '.join(MSE_SEARCHES)}, got {search!r}")
    if n < 1:
        raise ConfigError(f"the MSE grid needs at least one ratio, got {n}")
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    if search == "exhaustive" or n <= 20:
        best = mse_errors(levels, w, grid.to(w.dtype), valid).argmin(dim=0)  # (A, G, 1)
    else:
        stride = 10
        coarse = torch.arange(stride - 1, n, stride)  # indices of every 10th ratio
        if coarse[-1] != n - 1:
            coarse = torch.cat([coarse, torch.tensor([n - 1])])
        e1 = mse_errors(levels, w, grid[coarse].to(w.dtype), valid)
        centre = coarse[e1.argmin(dim=0)]  # (A, G, 1) index into grid
        offsets = torch.arange(-(stride - 1), stride).reshape(-1, 1, 1, 1)
        idx = (centre.unsqueeze(0) + offsets).clamp(0, n - 1)  # (2·stride − 1, A, G, 1)
        e2 = mse_errors(levels, w, grid[idx].to(w.dtype), valid)
        best = idx.gather(0, e2.argmin(dim=0, keepdim=True)).squeeze(0)
    ratio = grid[best].to(w.dtype)
    return range_scale(levels, ratio * absmax(w, valid))
