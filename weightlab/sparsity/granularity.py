"""Granularity: turning one score tensor into a mask with a given structure.

A superset of jaxpruner's sparsity types (Lee et al. 2023, "JaxPruner": unstructured,
N:M, block, channel). Scores are "higher = keep" (e.g. ``|W|`` from
:func:`~weightlab.sparsity.scores.magnitude_scores`). A weight of shape
``(out, in, k_1, ...)`` is read as the matrix ``(out, in·k_1·...)`` (a Conv filter is one
row, flattened in ``(in, k_1, ...)`` order); structure is defined on that matrix.

- ``"unstructured"``: keep the ``round-half-up(d · N)`` highest-scoring weights.
- ``"nm"``: N:M sparsity along the input dimension (Mishra et al. 2021, "Accelerating
  Sparse Deep Neural Networks", 2:4): each row is cut into groups of ``m`` consecutive
  entries and the ``n`` highest of each group are kept; the density is exactly ``n/m``.
- ``"block"``: the matrix is tiled by ``b_out × b_in`` blocks, each scored by the sum (or
  mean) of its scores; the ``round-half-up(d · B)`` best of the ``B`` blocks are kept whole.
- ``"channel"``: whole output rows (Linear neurons, Conv filters) scored by the sum (or
  mean) of their scores (with ``|W|`` scores: the L1 norm of Li et al. 2017, "Pruning
  Filters for Efficient ConvNets"); ``round-half-up(d · out)`` rows are kept.

Counts are exact (``round_half_up`` on the decimal the density prints as, so
``0.1 · 50 = 5``). Ties are broken by position, deterministically: among equal scores the
lower flat index wins — the lower weight index (row-major) for unstructured, the earlier
entry of its group for N:M, the lower block index (row-major over the block grid) for
blocks and the lower row for channels. Scores of ``-inf`` (a pruner marks weights that must
stay pruned this way) rank below every finite score; NaN is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

import torch

from weightlab.errors import ConfigError
from weightlab.sparsity.allocation import round_half_up, top_k

GRANULARITIES = ("unstructured", "nm", "block", "channel")
REDUCTIONS = ("sum", "mean")

Density = float | Fraction


def check_granularity(granularity: str) -> str:
    """``granularity`` if it is one of :data:`GRANULARITIES`, else a one-line ConfigError."""
    if granularity not in GRANULARITIES:
        raise ConfigError(
            f"unknown granularity {granularity!r}; use one of {', '.join(GRANULARITIES)}"
        )
    return granularity


def check_density(density: Density, what: str = "density") -> Density:
    """``density`` if it lies in ``(0, 1]`` (float or Fraction), else a ConfigError."""
    if isinstance(density, bool) or not isinstance(density, (int, float, Fraction)):
        raise ConfigError(f"{what} must be a number in (0, 1], got {density!r}")
    if not 0 < density <= 1:
        raise ConfigError(f"{what} must be in (0, 1], got {density}; 1 keeps every weight")
    return density


def check_nm(n: int, m: int) -> tuple[int, int]:
    """``(n, m)`` with ``1 <= n <= m``, else a ConfigError."""
    if int(m) < 1 or int(n) < 1 or int(n) > int(m):
        raise ConfigError(f"N:M sparsity needs 1 <= N <= M, got N={n}, M={m} (2:4 is N=2, M=4)")
    return int(n), int(m)


def _matrix(name: str, score: torch.Tensor, granularity: str) -> torch.Tensor:
    if score.dim() < 2:
        raise ConfigError(
            f"{granularity} granularity needs a weight with >= 2 dims, {name!r} has shape "
            f"{tuple(score.shape)}; select only Linear/Conv weights"
        )
    flat = score.detach().reshape(score.shape[0], -1).to(torch.float64)
    if torch.isnan(flat).any():
        raise ConfigError(f"scores for {name!r} contain NaN; the weights have diverged")
    return flat


_top_k = top_k  # bool mask of the k largest; ties go to the lower index


def unstructured_mask(score: torch.Tensor, density: Density, name: str = "weight") -> torch.Tensor:
    """Keep the ``round-half-up(density · N)`` highest scores (ties: lower flat index)."""
    check_density(density)
    flat = score.detach().reshape(-1).to(torch.float64)
    if torch.isnan(flat).any():
        raise ConfigError(f"scores for {name!r} contain NaN; the weights have diverged")
    return _top_k(flat, round_half_up(density, flat.numel())).view(score.shape)


def nm_mask(score: torch.Tensor, n: int = 2, m: int = 4, name: str = "weight") -> torch.Tensor:
    """N:M along the input dimension: in every group of ``m`` consecutive entries of a row
    of the ``(out, in·k)`` matrix keep the ``n`` highest (ties: the earlier entry)."""
    n, m = check_nm(n, m)
    mat = _matrix(name, score, "nm")
    if mat.shape[1] % m:
        raise ConfigError(
            f"N:M with M={m} needs M to divide the input dimension of {name!r} "
            f"({mat.shape[1]}); pick M dividing it or exclude the layer"
        )
    groups = mat.reshape(mat.shape[0], -1, m)
    order = torch.argsort(-groups, dim=-1, stable=True)[..., :n]
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order, True)
    return keep.reshape(score.shape)


def block_mask(
    score: torch.Tensor,
    density: Density,
    block: tuple[int, int] = (4, 4),
    reduce: str = "sum",
    name: str = "weight",
) -> torch.Tensor:
    """Keep the ``round-half-up(density · B)`` best ``b_out × b_in`` blocks of the
    ``(out, in·k)`` matrix, each scored by the sum (or mean) of its scores (ties: lower
    block index, row-major over the block grid)."""
    check_density(density)
    _check_reduce(reduce)
    if len(tuple(block)) != 2 or any(int(b) < 1 for b in block):
        raise ConfigError(f"block must be two positive sizes (b_out, b_in), got {block!r}")
    bo, bi = (int(b) for b in block)
    mat = _matrix(name, score, "block")
    rows, cols = mat.shape
    if rows % bo or cols % bi:
        raise ConfigError(
            f"block {bo}x{bi} does not tile {name!r} (as a {rows}x{cols} matrix); pick "
            "block sizes dividing both dimensions"
        )
    tiles = mat.reshape(rows // bo, bo, cols // bi, bi).sum(dim=(1, 3))
    if reduce == "mean":
        tiles = tiles / (bo * bi)
    keep = _top_k(tiles.reshape(-1), round_half_up(density, tiles.numel())).view(tiles.shape)
    return keep.repeat_interleave(bo, 0).repeat_interleave(bi, 1).reshape(score.shape)


def channel_mask(
    score: torch.Tensor, density: Density, reduce: str = "sum", name: str = "weight"
) -> torch.Tensor:
    """Keep the ``round-half-up(density · out)`` best output rows (Linear neurons, Conv
    filters), each scored by the sum (or mean) of its scores (ties: lower row)."""
    check_density(density)
    _check_reduce(reduce)
    mat = _matrix(name, score, "channel")
    rows = mat.sum(dim=1) if reduce == "sum" else mat.mean(dim=1)
    keep = _top_k(rows, round_half_up(density, rows.numel()))
    return keep[:, None].expand(mat.shape).reshape(score.shape).clone()


def _check_reduce(reduce: str) -> None:
    if reduce not in REDUCTIONS:
        raise ConfigError(f"unknown block/channel reduction {reduce!r}; use 'sum' or 'mean'")


def granular_mask(
    score: torch.Tensor,
    density: Density | None,
    granularity: str = "unstructured",
    *,
    n: int = 2,
    m: int = 4,
    block: tuple[int, int] = (4, 4),
    reduce: str = "sum",
    name: str = "weight",
) -> torch.Tensor:
    """One bool mask of ``score``'s shape at ``density`` with the given ``granularity``
    (module docstring). For ``"nm"`` the density is ``n/m``: pass ``None`` or exactly that."""
    check_granularity(granularity)
    if granularity == "nm":
        n, m = check_nm(n, m)
        if density is not None and abs(float(density) - n / m) > 1e-12:
            raise ConfigError(
                f"N:M sparsity fixes the density at N/M = {n}/{m}, got density {density}; "
                "pass density=None or N/M"
            )
        return nm_mask(score, n, m, name=name)
    if density is None:
        raise ConfigError(f"{granularity} granularity needs a density in (0, 1]")
    if granularity == "unstructured":
        return unstructured_mask(score, density, name=name)
    if granularity == "block":
        return block_mask(score, density, block, reduce, name=name)
    return channel_mask(score, density, reduce, name=name)


def granular_masks(
    scores: Mapping[str, torch.Tensor],
    density: Density | Mapping[str, Density] | None,
    granularity: str = "unstructured",
    *,
    n: int = 2,
    m: int = 4,
    block: tuple[int, int] = (4, 4),
    reduce: str = "sum",
) -> dict[str, torch.Tensor]:
    """Layer-wise masks ``{name: bool tensor}``: :func:`granular_mask` per layer, with one
    density for all layers or a ``{name: density}`` map (e.g. from
    :func:`~weightlab.sparsity.allocation.erk_densities`)."""
    check_granularity(granularity)
    out = {}
    for name, score in scores.items():
        if isinstance(density, Mapping):
            if name not in density:
                raise ConfigError(f"no density for {name!r}; give one for every scored layer")
            d = density[name]
        else:
            d = density
        out[name] = granular_mask(
            score, d, granularity, n=n, m=m, block=block, reduce=reduce, name=name
        )
    return out


__all__ = [
    "GRANULARITIES",
    "REDUCTIONS",
    "block_mask",
    "channel_mask",
    "check_density",
    "check_granularity",
    "check_nm",
    "granular_mask",
    "granular_masks",
    "nm_mask",
    "unstructured_mask",
]
