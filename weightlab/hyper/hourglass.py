"""Hourglass MLPs: wide skip connections, narrow residual branches, and a frozen random lift.

"Rethinking the shape convention of an MLP" (row [#68]) inverts the usual residual MLP
block. A conventional block keeps the skip path at the input width ``d`` and computes in an
expanded hidden space (``d → m → d``, ``m ≥ d``); an Hourglass block keeps the skip path at a
wide ``D`` and computes through a narrow bottleneck ``b < D``. Both are the same module here,
:class:`HourglassBlock` (pre-norm residual)::

    h ← h + W_up · GELU(W_down · LN(h) + b_down) + b_up        (D → b → D)

An Hourglass network first has to lift its ``d``-dimensional input to ``D`` dimensions; the
paper proposes that "this projection can remain fixed at random initialization throughout
training". :class:`FrozenRandomProjection` is that lift: ``W ~ N(0, 1/d)`` entrywise, drawn
from its own seed, held as a buffer (no gradient, no optimizer state), so a population
stacks it per member like any buffer. ``trainable=True`` holds the same draw as a
Parameter (the trained-lift control) and ``rank=r`` draws ``W = U V / √(r d)`` with ``U``,
``V`` standard normal (same entry variance, rank ``r``: the positive control that throws
information away).

:class:`HourglassNet`: lift ``d → D``, ``L`` blocks ``(D, b)``, a trained head ``D → d_out``.
:class:`ConventionalNet`: ``L`` blocks ``(d, m)`` at the input width, no lift and no head.
:func:`parameter_count` counts the lift's entries too, frozen or not (the paper's
parameter-matched comparison counts them).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator

__all__ = [
    "ConventionalNet",
    "FrozenRandomProjection",
    "HourglassBlock",
    "HourglassNet",
    "conventional_factory",
    "conventional_parameters",
    "hourglass_factory",
    "hourglass_parameters",
    "parameter_count",
]


def _positive(**sizes: int) -> None:
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")


class FrozenRandomProjection(nn.Module):
    """``x ↦ x Wᵀ`` with ``W ∈ R^{out×in}``, ``W_ij ~ N(0, 1/in)`` drawn from ``seed``.

    Args:
        in_features, out_features: ``d`` and ``D``.
        seed: the draw's seed (``weightlab.seeding.generator``); same seed, same ``W``.
        rank: ``None`` for a full Gaussian matrix; ``r`` draws ``W = U V / √(r·in)`` with
            ``U ∈ R^{out×r}``, ``V ∈ R^{r×in}`` standard normal (each entry still has
            variance ``1/in``; ``rank(W) = r``).
        trainable: hold ``W`` as a Parameter (the trained-lift control) instead of a buffer.

    The draw happens in :meth:`reset_parameters` from ``seed`` alone, so
    ``weightlab.models.build`` (which calls it for modules it does not know) and the
    constructor give the same ``W``, frozen or trainable.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        seed: int,
        rank: int | None = None,
        trainable: bool = False,
    ) -> None:
        super().__init__()
        _positive(in_features=in_features, out_features=out_features)
        if rank is not None:
            _positive(rank=rank)
            if rank > min(in_features, out_features):
                raise ConfigError(
                    f"lift rank {rank} exceeds min(in, out) = {min(in_features, out_features)}; "
                    "choose a rank <= both sizes or rank=None"
                )
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.seed, self.rank, self.trainable = int(seed), rank, bool(trainable)
        w = torch.empty(self.out_features, self.in_features)
        if self.trainable:
            self.weight = nn.Parameter(w)
        else:
            self.register_buffer("weight", w)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw ``W`` from ``generator(seed)`` (float32 draw, cast to the weight's dtype)."""
        g = generator(derive_seed("frozen_random_projection", self.seed))
        d, n = self.in_features, self.out_features
        if self.rank is None:
            w = torch.randn(n, d, generator=g) / math.sqrt(d)
        else:
            u = torch.randn(n, self.rank, generator=g)
            v = torch.randn(self.rank, d, generator=g)
            w = u @ v / math.sqrt(self.rank * d)
        self.weight.copy_(w.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        kind = "trainable" if self.trainable else "frozen"
        rank = "" if self.rank is None else f", rank={self.rank}"
        return f"in={self.in_features}, out={self.out_features}, {kind}{rank}"


class HourglassBlock(nn.Module):
    """Pre-norm residual MLP block ``h + W_up·GELU(W_down·LN(h))``, ``width → hidden → width``.

    Hourglass when ``hidden < width`` (wide skip, narrow residual), conventional when
    ``hidden ≥ width``. Linear layers have biases; LayerNorm has its affine ``γ, β``.
    """

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        _positive(width=width, hidden=hidden)
        self.norm = nn.LayerNorm(width)
        self.down = nn.Linear(width, hidden)
        self.up = nn.Linear(hidden, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(F.gelu(self.down(self.norm(h))))


class HourglassNet(nn.Module):
    """Lift ``d_in → D`` (:class:`FrozenRandomProjection`), ``depth`` blocks ``(D, b)``, head
    ``D → d_out`` (a trained Linear).

    Args:
        d_in: input width; ``d_out`` defaults to it (an autoencoder).
        width: ``D``, the skip width. bottleneck: ``b``. depth: ``L`` blocks.
        lift_seed: the lift's seed. lift_rank / train_lift: see :class:`FrozenRandomProjection`.
    """

    def __init__(
        self,
        d_in: int,
        width: int,
        bottleneck: int,
        depth: int,
        d_out: int | None = None,
        *,
        lift_seed: int = 0,
        lift_rank: int | None = None,
        train_lift: bool = False,
    ) -> None:
        super().__init__()
        d_out = d_in if d_out is None else d_out
        _positive(d_in=d_in, width=width, bottleneck=bottleneck, depth=depth, d_out=d_out)
        self.lift = FrozenRandomProjection(d_in, width, lift_seed, lift_rank, train_lift)
        self.blocks = nn.Sequential(*(HourglassBlock(width, bottleneck) for _ in range(depth)))
        self.head = nn.Linear(width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.lift(x)))


class ConventionalNet(nn.Module):
    """``depth`` blocks ``(d, m)`` at the input width ``d`` (``d → m → d``); no lift, no head:
    the output is the last block's ``d``-dimensional state."""

    def __init__(self, d: int, hidden: int, depth: int) -> None:
        super().__init__()
        _positive(d=d, hidden=hidden, depth=depth)
        self.blocks = nn.Sequential(*(HourglassBlock(d, hidden) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters plus every :class:`FrozenRandomProjection`'s frozen entries."""
    n = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, FrozenRandomProjection) and not m.trainable:
            n += m.weight.numel()
    return n


def _block_parameters(width: int, hidden: int) -> int:
    return 2 * width + (width * hidden + hidden) + (hidden * width + width)


def hourglass_parameters(d_in: int, width: int, bottleneck: int, depth: int, d_out=None) -> int:
    """:func:`parameter_count` of ``HourglassNet(d_in, width, bottleneck, depth, d_out)``
    without building it: lift ``d_in·D`` + ``L`` blocks ``(2D + 2Db + b + D)`` + head."""
    d_out = d_in if d_out is None else d_out
    return d_in * width + depth * _block_parameters(width, bottleneck) + width * d_out + d_out


def conventional_parameters(d: int, hidden: int, depth: int) -> int:
    """:func:`parameter_count` of ``ConventionalNet(d, hidden, depth)``."""
    return depth * _block_parameters(d, hidden)


def hourglass_factory(
    d_in: int,
    width: int,
    bottleneck: int,
    depth: int,
    d_out: int | None = None,
    *,
    lift_rank: int | None = None,
    train_lift: bool = False,
) -> Callable[[int], nn.Module]:
    """``seed -> HourglassNet`` built by :func:`weightlab.models.build` (PyTorch's default
    Linear init, LayerNorm 1/0, from ``seed``); the lift is drawn from
    ``derive_seed("hourglass.lift", seed)``, so the frozen, trained and rank-``r`` lifts of
    one seed share the rest of the initial weights."""
    from weightlab.models.factory import build

    def factory(seed: int) -> nn.Module:
        return build(
            HourglassNet,
            d_in,
            width,
            bottleneck,
            depth,
            d_out,
            seed=seed,
            lift_seed=derive_seed("hourglass.lift", seed),
            lift_rank=lift_rank,
            train_lift=train_lift,
        )

    return factory


def conventional_factory(d: int, hidden: int, depth: int) -> Callable[[int], nn.Module]:
    """``seed -> ConventionalNet`` built by :func:`weightlab.models.build`."""
    from weightlab.models.factory import model_factory

    return model_factory(ConventionalNet, d, hidden, depth)
