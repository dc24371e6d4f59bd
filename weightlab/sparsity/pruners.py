"""Training-time pruners: step callbacks that prune while :func:`weightlab.train.train` runs.

A :class:`Pruner` is ``score × allocation × granularity × schedule`` (jaxpruner's menu,
Lee et al. 2023, "JaxPruner"):

- score: ``"magnitude"`` ``|W|`` (Han et al. 2015; Zhu & Gupta 2017, "To prune, or not to
  prune", Sec. 3); ``"saliency"`` ``|W ⊙ ∂L/∂W|`` (the first-order Taylor saliency of
  Molchanov et al. 2017 / SNIP's connection sensitivity, Lee et al. 2019, Eq. 6), the
  gradient taken on the step's batch with respect to the effective weight; ``"random"``
  i.i.d. ``U(0, 1)`` from a seed derived from the pruner's seed and the step;
- allocation: ``"layerwise"`` (every layer at the target density), ``"global"`` (one
  threshold over all selected layers, unstructured only) or ``"erk"`` (Erdős–Rényi-Kernel
  per-layer densities, Evci et al. 2020, Sec. 3), from :mod:`weightlab.sparsity.allocation`;
- granularity: :mod:`weightlab.sparsity.granularity` (unstructured, N:M, block, channel);
- schedule: :mod:`weightlab.sparsity.schedules` (static, one-shot, periodic, polynomial).

Two kinds of mask:

- plain (``ste=False``): :func:`weightlab.core.apply_masks` with the optimizer, so pruned
  stored weights and their optimizer state (moments, momentum) are zeroed and stay zero;
  pruned weights score ``-inf`` at later updates, so they never come back (masks are
  nested).
- straight-through (``ste=True``): an :class:`STEMask` transform computes ``W ⊙ M`` in the
  forward pass but passes the gradient through unchanged (``∂L/∂W := ∂L/∂(W ⊙ M)``, the
  straight-through estimator of Bengio et al. 2013, as in jaxpruner's STE pruners). The
  dense weights keep training, every update re-scores them all, and pruned weights can
  come back. :func:`weightlab.core.merge` bakes ``W ⊙ M`` into the final weights.

Steps are those of :class:`~weightlab.train.callbacks.StepContext` (1-based, after the
update); a schedule's step-0 update is applied by :meth:`Pruner.prepare` before training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from weightlab.core.mask import Mask, apply_masks
from weightlab.core.selectors import Selector
from weightlab.core.transforms import Transform, attach, parametrized_names, transforms_of
from weightlab.errors import ConfigError
from weightlab.models.dropout import dropout_step
from weightlab.seeding import derive_seed, generator
from weightlab.sparsity.allocation import erk_densities, global_masks, round_half_up
from weightlab.sparsity.granularity import check_granularity, check_nm, granular_masks
from weightlab.sparsity.schedules import PolynomialSchedule, Schedule, density_of
from weightlab.train.callbacks import StepContext
from weightlab.train.losses import LossFn

SCORES = ("magnitude", "saliency", "random")
ALLOCATIONS = ("layerwise", "global", "erk")
Masks = dict[str, torch.Tensor]


class _STEMultiply(torch.autograd.Function):
    """``W ⊙ M`` forward, identity backward (the straight-through estimator)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return weight * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class STEMask(Transform):
    """Straight-through mask: forward ``W ⊙ M``; backward passes ``∂L/∂(W ⊙ M)`` to the
    dense stored ``W`` unchanged. The stored weight is never zeroed."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().clone().float())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _STEMultiply.apply(weight, self.mask.to(weight.dtype))

    def extra_repr(self) -> str:
        return f"density={self.mask.mean().item():.4f}"


def _transform(model: nn.Module, name: str, kind: type) -> Transform | None:
    found = [t for t in transforms_of(model, name) if isinstance(t, kind)]
    return found[0] if found else None


@torch.no_grad()
def apply_ste_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Attach (or update) an :class:`STEMask` on each named parameter. Unlike
    :func:`~weightlab.core.apply_masks` the stored weights and optimizer state are left
    as they are (the dense weights keep training)."""
    for name, mask in masks.items():
        if _transform(model, name, Mask) is not None:
            raise ConfigError(
                f"{name!r} already has a plain Mask; straight-through pruning needs an "
                "unmasked model (use ste=False to prune a masked model)"
            )
        existing = _transform(model, name, STEMask)
        stored = _stored(model, name)
        if mask.shape != stored.shape:
            raise ConfigError(
                f"mask for {name!r} has shape {tuple(mask.shape)}, weight has "
                f"{tuple(stored.shape)}; build masks from this model's weights"
            )
        if existing is None:
            attach(model, name, STEMask(mask.to(stored.device)))
        else:
            existing.mask.copy_(mask)
    return model


def get_ste_masks(model: nn.Module) -> Masks:
    """``{plain_name: bool mask}`` of every :class:`STEMask` attached to ``model``."""
    out = {}
    for name in parametrized_names(model):
        t = _transform(model, name, STEMask)
        if t is not None:
            out[name] = t.mask.bool().clone()
    return out


def _stored(model: nn.Module, name: str) -> torch.Tensor:
    """The stored (dense, pre-transform) tensor of parameter ``name``."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if parametrize.is_parametrized(module, attr):
        return module.parametrizations[attr].original
    return getattr(module, attr)


def batch_gradients(
    model: nn.Module,
    names: list[str],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    seed: int = 0,
    step: int = 0,
) -> dict[str, torch.Tensor]:
    """``{name: ∂L/∂W_eff}``: the dense gradient of the mean per-example loss on ``(x, y)``
    with respect to each *effective* weight ``W_eff`` (after any mask), so it is non-zero
    at pruned positions too (what RigL grows by, Evci et al. 2020, Sec. 3).

    The model's ``.grad`` fields are not touched (:func:`torch.autograd.grad`), its
    buffers (BatchNorm statistics) are restored afterwards, and dropout draws the masks of
    member ``seed`` at update ``step`` (the same as the step's own forward pass)."""
    saved = {k: b.detach().clone() for k, b in model.named_buffers()}
    try:
        with parametrize.cached():
            picked = _modules(model, names)
            effective = [getattr(m, a) for m, a in picked]
            with dropout_step(model, seed, step):
                loss = loss_fn(model(x), y).mean()
            grads = torch.autograd.grad(loss, effective, allow_unused=True)
    finally:
        with torch.no_grad():
            for k, b in model.named_buffers():
                if k in saved:
                    b.copy_(saved[k])
    return {
        n: (g.detach() if g is not None else torch.zeros_like(w))
        for n, g, w in zip(names, grads, effective, strict=True)
    }


def _modules(model: nn.Module, names: list[str]) -> list[tuple[nn.Module, str]]:
    out = []
    for name in names:
        module_name, _, attr = name.rpartition(".")
        out.append((model.get_submodule(module_name) if module_name else model, attr))
    return out


@dataclass
class Pruner:
    """A training-time pruner (module docstring); pass it in ``train(..., callbacks=[p])``
    after calling :meth:`prepare`, which applies a step-0 update if the schedule has one (a
    step-0 target of sparsity 0, e.g. Zhu & Gupta's ``s_i = 0`` at ``t0 = 0``, needs none).

    Args:
        schedule: when to update and to what sparsity.
        score: ``"magnitude"``, ``"saliency"`` or ``"random"``.
        allocation: ``"layerwise"``, ``"global"`` (unstructured only) or ``"erk"``.
        granularity: ``"unstructured"``, ``"nm"``, ``"block"`` or ``"channel"``.
        ste: straight-through masks (dense weights keep training; pruned ones can return).
        n, m: N:M sizes (``"nm"``; the schedule's sparsity must be ``1 - n/m``).
        block: ``(b_out, b_in)`` (``"block"``); reduce: ``"sum"`` or ``"mean"`` of a
            block's / channel's scores.
        selector: which weights to prune (default: every Linear/Conv weight).
        seed: seeds random scores (default: the member's seed, ``StepContext.seed``).

    ``log`` records one ``{"step", "sparsity", "density"}`` per update (``density`` is
    the realized fraction of selected weights kept).
    """

    schedule: Schedule
    score: str = "magnitude"
    allocation: str = "layerwise"
    granularity: str = "unstructured"
    ste: bool = False
    n: int = 2
    m: int = 4
    block: tuple[int, int] = (4, 4)
    reduce: str = "sum"
    selector: Selector | None = None
    seed: int | None = None
    log: list[dict] = field(default_factory=list, init=False)
    _prepared: bool = field(default=False, init=False, repr=False)
    _checked: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule):
            raise ConfigError(
                "Pruner needs a Schedule (weightlab.sparsity.schedules.make_schedule(...)), "
                f"got {type(self.schedule).__name__}"
            )
        if self.score not in SCORES:
            raise ConfigError(
                f"unknown pruning score {self.score!r}; use one of {', '.join(SCORES)}"
            )
        if self.allocation not in ALLOCATIONS:
            raise ConfigError(
                f"unknown allocation {self.allocation!r}; use one of {', '.join(ALLOCATIONS)}"
            )
        check_granularity(self.granularity)
        if self.allocation == "global" and self.granularity != "unstructured":
            raise ConfigError(
                f"global allocation ranks single weights; {self.granularity!r} granularity "
                "needs allocation='layerwise' or 'erk'"
            )
        if self.granularity == "nm":
            n, m = check_nm(self.n, self.m)
            if self.allocation != "layerwise":
                raise ConfigError(
                    "N:M fixes every layer's density at N/M; use allocation='layerwise'"
                )
            if isinstance(self.schedule, PolynomialSchedule):
                raise ConfigError(
                    "N:M sparsity has one density (N/M); use a static, one-shot or periodic "
                    f"schedule with sparsity {1 - n / m:g}, not a gradual one"
                )
            target = getattr(self.schedule, "sparsity", None)
            if target is not None and abs(float(target) - (1 - n / m)) > 1e-12:
                raise ConfigError(
                    f"{n}:{m} sparsity removes {1 - n / m:g} of the weights, but the schedule "
                    f"asks for {target}; set the schedule's sparsity to {1 - n / m:g}"
                )

    # -- callback protocol -------------------------------------------------------------

    def prepare(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        total: int | None = None,
        seed: int = 0,
    ) -> nn.Module:
        """Before training: check the schedule against ``total`` updates (if given) and
        apply the schedule's step-0 update, if any. Returns ``model``."""
        if total is not None:
            self.schedule.check(total)
        target = self.schedule.sparsity_at(0)
        if target is not None:
            if self.score == "saliency":
                raise ConfigError(
                    "saliency pruning needs a training batch, so it cannot update at step 0; "
                    "start its schedule at step >= 1 (for pruning at init use SNIP scores)"
                )
            self.update(model, target, step=0, optimizer=optimizer, seed=seed)
        self._prepared = True
        return model

    def __call__(self, model: nn.Module, ctx: StepContext) -> None:
        if not self._checked:
            first = self.schedule.sparsity_at(0)
            if first is not None and first > 0 and not self._prepared:
                raise ConfigError(
                    "this pruner's schedule updates the mask at step 0: call "
                    "pruner.prepare(model) before train(...)"
                )
            self.schedule.check(ctx.total)
            self._checked = True
        target = self.schedule.sparsity_at(ctx.step)
        if target is not None:
            self.update(model, target, step=ctx.step, optimizer=ctx.optimizer, ctx=ctx)

    # -- one update --------------------------------------------------------------------

    def update(
        self,
        model: nn.Module,
        sparsity: float,
        *,
        step: int,
        optimizer: torch.optim.Optimizer | None = None,
        ctx: StepContext | None = None,
        seed: int = 0,
    ) -> Masks:
        """Prune ``model`` to ``sparsity`` now (scores, allocation, granularity), attach the
        masks and return them."""
        picked = (self.selector or Selector())(model)
        if not picked:
            raise ConfigError("the pruner's selector picked no parameters; check its types")
        names = list(picked)
        scores = self._scores(model, names, step, ctx, seed)
        if not self.ste:
            for name in names:  # pruned weights rank last: plain masks are nested
                if _transform(model, name, STEMask) is not None:
                    raise ConfigError(
                        f"{name!r} has a straight-through mask; a plain pruner cannot prune "
                        "it (use ste=True, or merge() the model first)"
                    )
                old = _transform(model, name, Mask)
                if old is not None:
                    alive = old.mask.bool().to(scores[name].device)
                    scores[name] = torch.where(alive, scores[name], -math.inf)
        masks = self._allocate(scores, density_of(sparsity))
        if self.ste:
            apply_ste_masks(model, masks)
        else:
            apply_masks(model, masks, optimizer)
        kept = sum(int(mk.sum()) for mk in masks.values())
        total = sum(mk.numel() for mk in masks.values())
        self.log.append({"step": step, "sparsity": float(sparsity), "density": kept / total})
        return masks

    def _scores(
        self, model: nn.Module, names: list[str], step: int, ctx: StepContext | None, seed: int
    ) -> dict[str, torch.Tensor]:
        if self.score == "random":
            base = self.seed if self.seed is not None else (ctx.seed if ctx else seed)
            g = generator(derive_seed("pruner-random", base, step))
            return {
                n: torch.rand(_stored(model, n).shape, generator=g, dtype=torch.float64).to(
                    _stored(model, n).device
                )
                for n in names
            }
        with torch.no_grad():
            if self.ste:  # score the dense weights: pruned ones may come back
                weights = {n: _stored(model, n).detach().to(torch.float64) for n in names}
            else:
                picked = _modules(model, names)
                weights = {
                    n: getattr(mod, a).detach().to(torch.float64)
                    for n, (mod, a) in zip(names, picked, strict=True)
                }
        if self.score == "magnitude":
            return {n: w.abs() for n, w in weights.items()}
        if ctx is None:
            raise ConfigError("saliency pruning needs the step's batch (a StepContext)")
        grads = batch_gradients(
            model, names, ctx.x, ctx.y, ctx.loss_fn, seed=ctx.seed, step=ctx.step
        )
        return {n: (weights[n] * grads[n].to(torch.float64)).abs() for n in names}

    def _allocate(self, scores: dict[str, torch.Tensor], density) -> Masks:
        if self.allocation == "global":
            total = sum(s.numel() for s in scores.values())
            return global_masks(scores, round_half_up(density, total))
        opts = {"n": self.n, "m": self.m, "block": self.block, "reduce": self.reduce}
        if self.allocation == "erk":
            shapes = {n: s.shape for n, s in scores.items()}
            return granular_masks(
                scores, erk_densities(shapes, float(density)), self.granularity, **opts
            )
        return granular_masks(scores, density, self.granularity, **opts)


PRUNERS = ("magnitude", "saliency", "random", "ste_magnitude", "ste_random")


def make_pruner(name: str, schedule: Schedule, **kwargs) -> Pruner:
    """A pruner by name (:data:`PRUNERS`): ``"magnitude"``, ``"saliency"``, ``"random"``,
    and the straight-through ``"ste_magnitude"``, ``"ste_random"``; other
    :class:`Pruner` fields as keywords."""
    if name not in PRUNERS:
        raise ConfigError(f"unknown pruner {name!r}; use one of {', '.join(PRUNERS)}")
    ste = name.startswith("ste_")
    return Pruner(schedule, score=name.removeprefix("ste_"), ste=ste, **kwargs)


__all__ = [
    "ALLOCATIONS",
    "PRUNERS",
    "SCORES",
    "Pruner",
    "STEMask",
    "apply_ste_masks",
    "batch_gradients",
    "get_ste_masks",
    "make_pruner",
]
