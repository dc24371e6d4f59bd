"""Dynamic sparse training: SET and RigL as step callbacks for :func:`weightlab.train.train`.

Both keep every layer at a fixed density while its connectivity changes. Every ``ΔT``
(``every``) updates, while ``t < T_end`` (``end_fraction`` of the run), each selected layer
with ``a`` active weights:

1. drops ``k = round-half-up(f(t) · a)`` active weights with the smallest magnitude
   (Evci et al. 2020, "Rigging the Lottery", Sec. 3, Eq. 4's ``ArgTopK(-|θ|)``; the
   magnitude form of SET's drop used by jaxpruner and RigL's SET baseline. Mocanu et al.
   2018, "Scalable training of artificial neural networks with adaptive sparse
   connectivity", Algorithm 1, removes ``ζ`` of the positive and ``ζ`` of the negative
   weights closest to zero separately, which can differ when the signs are unbalanced);
2. grows exactly ``k`` among the positions inactive after the drop (the ones just dropped
   included, as in RigL's and jaxpruner's code): at random for :class:`SET`, the largest
   ``|∂L/∂W_eff|`` for :class:`RigL` (the dense gradient on the step's batch, with respect
   to the effective, masked weight; Evci et al. 2020, Sec. 3, "Grow");

so the layer's count of active weights is exactly ``a`` again. A position active before
and after (dropped then regrown) keeps its weight. Newly active weights start at exactly
zero (``regrow_init="zero"``, RigL's choice; SET's random re-initialization is
``regrow_init="random"``: ``U(±1/√fan_in)``), and their optimizer state (Adam moments,
momentum buffers) is reset to zero, as in jaxpruner and RigL. Dropped weights are zeroed
with their state by :func:`weightlab.core.apply_masks`.

Drop fraction: SET keeps ``ζ`` constant (``decay="constant"``); RigL decays it by cosine,
``f(t) = α/2 (1 + cos(π t / T_end))`` (Evci et al. 2020, Eq. 1; ``decay="cosine"``).

Ties are broken by position (the lower flat index is kept on a drop and grown first).
Initial masks (:meth:`~_DynamicSparse.prepare`): ERK or uniform layer densities
(:func:`~weightlab.sparsity.allocation.erk_densities`), placed at random from a seed
(exact counts). Step callbacks run in the loop engine only: populations are not supported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from weightlab.core.mask import Mask, _zero_optimizer_state, apply_masks
from weightlab.core.selectors import Selector
from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator
from weightlab.sparsity.allocation import (
    erk_densities,
    keep_counts,
    round_half_up,
    uniform_densities,
)
from weightlab.sparsity.granularity import _top_k as _top
from weightlab.sparsity.granularity import check_density
from weightlab.sparsity.pruners import _modules, _stored, _transform, batch_gradients
from weightlab.sparsity.random_masks import random_masks
from weightlab.train.callbacks import StepContext

DISTRIBUTIONS = ("erk", "uniform")
DECAYS = ("constant", "cosine")
REGROW_INITS = ("zero", "random")
Masks = dict[str, torch.Tensor]


def drop_fraction(alpha: float, step: int, end: int, decay: str = "cosine") -> float:
    """The fraction of active weights replaced at ``step``: ``α`` (``"constant"``) or
    ``α/2 (1 + cos(π t / T_end))`` (``"cosine"``, Evci et al. 2020, Eq. 1)."""
    if decay == "constant":
        return float(alpha)
    return float(alpha) / 2 * (1 + math.cos(math.pi * step / end))


@dataclass
class _DynamicSparse:
    """Shared machinery of :class:`SET` and :class:`RigL` (module docstring).

    Args:
        density: overall fraction of selected weights kept, in (0, 1].
        every: ``ΔT``, updates between connectivity changes.
        fraction: ``ζ`` (SET) / ``α`` (RigL), the drop fraction at ``t = 0``, in (0, 1).
        end_fraction: ``T_end`` as a fraction of the run's updates; no change at or after it.
        decay: ``"constant"`` or ``"cosine"`` drop fraction.
        distribution: initial layer densities, ``"erk"`` or ``"uniform"``.
        regrow_init: ``"zero"`` (default) or ``"random"`` (``U(±1/√fan_in)``) for new weights.
        selector: which weights are sparse (default: every Linear/Conv weight).
        seed: seeds the initial masks and SET's random growth (default: the member's seed).

    ``log`` gets one entry per update: step, drop fraction, and per layer how many weights
    were dropped (= grown) and how many positions became newly active.
    """

    density: float
    every: int = 100
    fraction: float = 0.3
    end_fraction: float = 1.0
    decay: str = "constant"
    distribution: str = "erk"
    regrow_init: str = "zero"
    selector: Selector | None = None
    seed: int | None = None
    log: list[dict] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        check_density(self.density)
        if isinstance(self.every, bool) or int(self.every) != self.every or self.every < 1:
            raise ConfigError(f"update interval 'every' must be an integer >= 1, got {self.every}")
        if not 0 < float(self.fraction) < 1:
            raise ConfigError(f"drop fraction must be in (0, 1), got {self.fraction}; 0.3 is usual")
        if not 0 < float(self.end_fraction) <= 1:
            raise ConfigError(f"end_fraction must be in (0, 1], got {self.end_fraction}")
        for value, options, what in (
            (self.decay, DECAYS, "drop-fraction decay"),
            (self.distribution, DISTRIBUTIONS, "sparsity distribution"),
            (self.regrow_init, REGROW_INITS, "regrow_init"),
        ):
            if value not in options:
                raise ConfigError(f"unknown {what} {value!r}; use one of {', '.join(options)}")

    # -- setup -------------------------------------------------------------------------

    def _picked(self, model: nn.Module) -> list[str]:
        names = list((self.selector or Selector())(model))
        if not names:
            raise ConfigError("the selector picked no parameters; check its types")
        return names

    def initial_masks(self, model: nn.Module, seed: int = 0) -> Masks:
        """Random masks with exact ERK or uniform layer counts, drawn from
        ``derive_seed("dst-init", seed)`` (``self.seed`` if set)."""
        shapes = {n: _stored(model, n).shape for n in self._picked(model)}
        rule = erk_densities if self.distribution == "erk" else uniform_densities
        counts = keep_counts(shapes, rule(shapes, self.density))
        base = self.seed if self.seed is not None else seed
        masks = random_masks(
            shapes, keep=counts, generator=generator(derive_seed("dst-init", base))
        )
        return {n: m.to(_stored(model, n).device) for n, m in masks.items()}

    def prepare(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *, seed: int = 0
    ) -> Masks:
        """Attach :meth:`initial_masks` to ``model`` (before training); returns them. A model
        that already carries masks on every selected weight may skip this."""
        masks = self.initial_masks(model, seed)
        apply_masks(model, masks, optimizer)
        return masks

    # -- callback ----------------------------------------------------------------------

    def __call__(self, model: nn.Module, ctx: StepContext) -> None:
        end = round_half_up(self.end_fraction, ctx.total)
        if ctx.step % self.every or ctx.step >= end:
            return
        self.update(model, ctx, drop_fraction(self.fraction, ctx.step, end, self.decay))

    def _grow_scores(
        self, model: nn.Module, names: list[str], ctx: StepContext
    ) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def update(self, model: nn.Module, ctx: StepContext, fraction: float) -> Masks:
        """One drop-and-grow update at ``ctx.step`` with drop fraction ``fraction``."""
        names = self._picked(model)
        old = {}
        for name in names:
            t = _transform(model, name, Mask)
            if t is None:
                raise ConfigError(
                    f"{name!r} has no mask: call {type(self).__name__}.prepare(model) before "
                    "train(...), or apply masks to every selected weight"
                )
            old[name] = t.mask.bool().reshape(-1)
        with torch.enable_grad():
            grow = self._grow_scores(model, names, ctx)
        entry = {"step": ctx.step, "fraction": fraction, "dropped": {}, "new": {}}
        new_masks = {}
        for name, (module, attr) in zip(names, _modules(model, names), strict=True):
            was = old[name]
            active = int(was.sum())
            k = round_half_up(fraction, active)
            weight = getattr(module, attr).detach().reshape(-1).to(torch.float64)
            drop_score = torch.where(was, weight.abs(), -math.inf)
            kept = _top(drop_score, active - k)
            score = torch.where(
                kept, -math.inf, grow[name].reshape(-1).to(kept.device, torch.float64)
            )
            now = kept | _top(score, k)
            new_masks[name] = now.view(getattr(module, attr).shape)
            entry["dropped"][name] = k
            entry["new"][name] = int((now & ~was).sum())
        apply_masks(model, new_masks, ctx.optimizer)
        for name in names:
            self._init_new(model, name, new_masks[name] & ~old[name].view_as(new_masks[name]), ctx)
        self.log.append(entry)
        return new_masks

    def _init_new(self, model: nn.Module, name: str, new: torch.Tensor, ctx: StepContext) -> None:
        """Newly active weights: value 0 (or ``U(±1/√fan_in)``), optimizer state 0."""
        stored = _stored(model, name)
        if self.regrow_init == "zero":
            stored.masked_fill_(new, 0.0)
        else:
            bound = 1.0 / math.sqrt(stored[0].numel())
            g = generator(derive_seed("dst-regrow", self._seed(ctx), ctx.step, name))
            draw = (torch.rand(stored.shape, generator=g, dtype=torch.float64) * 2 - 1) * bound
            stored.copy_(torch.where(new, draw.to(stored.device, stored.dtype), stored))
        if ctx.optimizer is not None:
            _zero_optimizer_state(ctx.optimizer, stored, ~new)

    def _seed(self, ctx: StepContext) -> int:
        return self.seed if self.seed is not None else ctx.seed


@dataclass
class SET(_DynamicSparse):
    """Sparse Evolutionary Training (Mocanu et al. 2018): every ``every`` updates drop the
    fraction ``ζ`` (``fraction``, constant) of smallest-magnitude active weights per layer
    and regrow as many at random among the inactive positions."""

    def _grow_scores(self, model, names, ctx):
        g = generator(derive_seed("set-grow", self._seed(ctx), ctx.step))
        return {
            n: torch.rand(_stored(model, n).shape, generator=g, dtype=torch.float64) for n in names
        }


@dataclass
class RigL(_DynamicSparse):
    """Rigging the Lottery (Evci et al. 2020): drop by magnitude, grow the largest
    ``|∂L/∂W_eff|`` (dense gradient on the step's batch), drop fraction
    ``α/2 (1 + cos(π t / T_end))``, ``T_end`` = 75% of training by default."""

    end_fraction: float = 0.75
    decay: str = "cosine"

    def _grow_scores(self, model, names, ctx):
        grads = batch_gradients(
            model, names, ctx.x, ctx.y, ctx.loss_fn, seed=ctx.seed, step=ctx.step
        )
        return {n: g.abs() for n, g in grads.items()}


DST_METHODS = {"set": SET, "rigl": RigL}


def make_dst(name: str, density: float, **kwargs) -> _DynamicSparse:
    """``"set"`` or ``"rigl"`` with its fields as keywords."""
    if name not in DST_METHODS:
        raise ConfigError(f"unknown dynamic sparse method {name!r}; use 'set' or 'rigl'")
    return DST_METHODS[name](density, **kwargs)


__all__ = [
    "DECAYS",
    "DISTRIBUTIONS",
    "DST_METHODS",
    "REGROW_INITS",
    "RigL",
    "SET",
    "drop_fraction",
    "make_dst",
]
