"""Low-rank and task-aligned low-rank initialization, Frobenius-norm matched.

Liu et al. (2023), "How connectivity structure shapes rich and lazy learning in neural
circuits" (arXiv:2310.08513; methods row [#5]) compare initial weights of different
*rank* at one overall scale: "high-rank initializations typically yield smaller network
changes indicative of lazier learning", "low-rank initialization biases learning towards
richer learning", except when the low-rank init "aligns with task and data statistics".
The scale is held fixed by matching the Frobenius norm (their Sec. 3: the effective-rank
comparison is done at equal ``‖W_0‖_F``).

Two schemes (a weight of shape ``(out, *in)`` is treated as the matrix ``(out, prod(in))``):

- ``low_rank(rank, base="he")``: draw the full-rank weight ``W_b`` of a base scheme
  (any registered one, with ``base_params``) from the tensor's generator, then
  ``W = A Bᵀ`` with ``A ~ N(0, 1)^{out×r}``, ``B ~ N(0, 1)^{in×r}`` drawn from the same
  generator, rescaled so that ``‖W‖_F = ‖W_b‖_F`` (so ``E‖W‖_F²`` equals the base
  scheme's). Its column and row spaces are uniformly random r-dimensional subspaces.
  ``rank=None`` (or ``"full"``) returns ``W_b`` itself.
- ``aligned_low_rank(rank, base="he")`` (needs ``target``): ``W = c · L Vᵣᵀ`` with
  ``Vᵣ`` the top-``r`` right singular vectors of the target matrix (the task's top input
  directions, e.g. a teacher's first-layer weight in ``(units, in)`` layout), ``L`` the
  target's top-``r`` left singular vectors when the target has the weight's number of
  rows and otherwise a Haar-random ``out × r`` matrix with orthonormal columns, and
  ``c = ‖W_b‖_F / √r`` (equal singular values, Frobenius matched to the base draw).

``target`` is one matrix of shape ``(k, prod(in))`` (used for every selected weight whose
input size matches) or a mapping ``{plain parameter name: matrix}``. A teacher stored for
``x @ W`` (``(in, k)``, as :mod:`weightlab.data.teacher`) is passed transposed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from weightlab.errors import ConfigError
from weightlab.init.registry import InitContext, Initializer, get_initializer, orthogonal, register


def _check_rank(rank: Any) -> int | None:
    if rank is None or rank == "full":
        return None
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"rank must be an integer >= 1 or 'full', got {rank!r}")
    return rank


def _base(base: str, base_params: Mapping[str, Any] | None) -> Initializer:
    if base in ("low_rank", "aligned_low_rank"):
        raise ConfigError(f"base scheme {base!r} would recurse; use e.g. base='he' or 'glorot'")
    return get_initializer(base, **dict(base_params or {}))


def _matrix_shape(shape: torch.Size, ctx: InitContext) -> tuple[int, int]:
    shape = tuple(shape)
    if len(shape) < 2:
        raise ConfigError(f"low-rank init needs a weight of >= 2 dims; {ctx.name} is {shape}")
    return shape[0], math.prod(shape[1:])


def low_rank_matrix(rows: int, cols: int, rank: int, g: torch.Generator) -> torch.Tensor:
    """``A Bᵀ`` with i.i.d. standard normal ``A`` (rows × r) and ``B`` (cols × r), float64:
    rank ``min(r, rows, cols)`` almost surely, random row and column spaces."""
    r = min(rank, rows, cols)
    a = torch.randn((rows, r), generator=g, dtype=torch.float64)
    b = torch.randn((cols, r), generator=g, dtype=torch.float64)
    return a @ b.T


@register("low_rank")
class LowRank(Initializer):
    """Rank-``rank`` weights with the Frobenius norm of a full-rank draw of ``base``
    (Liu et al. 2023, [#5]; see the module docstring)."""

    def __init__(
        self, rank: int | str | None = 1, base: str = "he", base_params: dict | None = None
    ) -> None:
        self.rank = _check_rank(rank)
        self.base = _base(base, base_params)

    def weight(self, shape, ctx):
        rows, cols = _matrix_shape(shape, ctx)
        full = self.base.weight(shape, ctx).to(torch.float64)
        if self.rank is None:
            return full
        w = low_rank_matrix(rows, cols, self.rank, ctx.generator)
        return (w * (full.norm() / w.norm())).reshape(tuple(shape))


def _target_for(target: Any, ctx: InitContext, cols: int) -> torch.Tensor:
    if isinstance(target, Mapping):
        if ctx.name not in target:
            raise ConfigError(
                f"aligned_low_rank: target has no matrix for {ctx.name!r}; give one per selected "
                f"weight (keys: {', '.join(map(str, target))})"
            )
        target = target[ctx.name]
    t = torch.as_tensor(target).detach().to("cpu", torch.float64)
    if t.dim() != 2 or t.shape[1] != cols:
        raise ConfigError(
            f"aligned_low_rank: target of shape {tuple(t.shape)} does not fit {ctx.name} "
            f"(needs (k, {cols}): one row per unit, one column per input; transpose an x @ W "
            "teacher)"
        )
    if not torch.isfinite(t).all() or t.abs().sum() == 0:
        raise ConfigError("aligned_low_rank: target must be finite and nonzero")
    return t


@register("aligned_low_rank")
class AlignedLowRank(Initializer):
    """Rank-``rank`` weights along the target's top singular directions, Frobenius matched
    to a full-rank draw of ``base`` (Liu et al. 2023, [#5]: low-rank init "that aligns with
    task and data statistics"; see the module docstring)."""

    needs = ("target",)

    def __init__(self, rank: int = 1, base: str = "he", base_params: dict | None = None) -> None:
        r = _check_rank(rank)
        if r is None:
            raise ConfigError("aligned_low_rank needs an integer rank >= 1")
        self.rank = r
        self.base = _base(base, base_params)

    def weight(self, shape, ctx):
        rows, cols = _matrix_shape(shape, ctx)
        t = _target_for(ctx.target, ctx, cols)
        full = self.base.weight(shape, ctx).to(torch.float64)  # drawn first, as low_rank
        r = min(self.rank, rows, cols, *t.shape)
        u, _, vh = torch.linalg.svd(t, full_matrices=False)
        left = u[:, :r] if t.shape[0] == rows else orthogonal(rows, r, ctx.generator)
        w = left @ vh[:r]
        return (w * (full.norm() / w.norm())).reshape(tuple(shape))


__all__ = ["AlignedLowRank", "LowRank", "low_rank_matrix"]
