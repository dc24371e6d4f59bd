"""Iterative hard thresholding (IHT) as a step callback of the one training loop.

"A Recovery Guarantee for Sparse Neural Networks" (methods row [#95]): a gradient step on
the loss, then the hard-thresholding operator ``H_k`` that keeps the ``k`` largest-magnitude
entries of each selected weight and zeroes the rest,

    W_{t+1} = H_k(W_t − η ∇L(W_t)),

the classic IHT iteration of Blumensath & Davies (2009) applied layer by layer.
:class:`HardThreshold` is a :data:`~weightlab.train.callbacks.StepCallback`:
:func:`weightlab.train.train` performs the gradient step (any of its optimizers) and the
callback projects right after every update, so IHT runs in the same loop as everything
else. The support is *not* fixed: an entry zeroed at one step re-enters when its gradient
step carries it into the top ``k``. The optimizer's state is left alone (the projection
acts on the iterate only), unless ``reset_state=True``.

Exact ``k``: ties at the threshold go to the lower flat index, so the projection is
deterministic (:func:`top_k_mask`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from weightlab.core.transforms import _resolve
from weightlab.errors import ConfigError
from weightlab.sparsity.allocation import keep_counts, top_k, uniform_densities
from weightlab.train.callbacks import StepContext


def top_k_mask(weight: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` largest ``|weight|`` entries (the support of ``H_k``).

    Exactly ``k`` entries are kept; among entries equal to the ``k``-th largest magnitude
    the lower flat indices win, so the result does not depend on ``torch.topk``'s order.
    """
    n = weight.numel()
    k = int(k)
    if not 0 <= k <= n:
        raise ConfigError(f"cannot keep k={k} of {n} weights; choose k in 0..{n}")
    flat = weight.detach().reshape(-1).abs()
    mask = torch.zeros(n, dtype=torch.bool, device=weight.device)
    if k == 0:
        return mask.view(weight.shape)
    if torch.isnan(flat).any():
        raise ConfigError("weights contain NaN; training diverged before hard thresholding")
    return top_k(flat, k).view(weight.shape)


def hard_threshold(weight: torch.Tensor, k: int) -> torch.Tensor:
    """``H_k(weight)``: a copy with all but the ``k`` largest-magnitude entries zeroed."""
    return weight * top_k_mask(weight, k).to(weight.dtype)


def iht_keep_counts(shapes: Mapping[str, torch.Size], density: float) -> dict[str, int]:
    """``k`` per layer for a uniform ``density`` in ``(0, 1]``: ``round-half-up(d · N_l)``."""
    return keep_counts(shapes, uniform_densities(shapes, density))


def _stored(model: nn.Module, name: str) -> torch.Tensor:
    """The tensor the optimizer updates for plain name ``name`` (the parametrization's
    ``original`` when transforms such as masks are attached)."""
    try:
        module, attr = _resolve(model, name)
    except (AttributeError, KeyError, ConfigError):
        raise ConfigError(f"model has no parameter {name!r}; name a weight it has") from None
    if parametrize.is_parametrized(module, attr):
        return module.parametrizations[attr].original
    p = getattr(module, attr, None)
    if not isinstance(p, torch.Tensor):
        raise ConfigError(f"model has no parameter {name!r}; name a weight it has")
    return p


class HardThreshold:
    """Step callback projecting each named weight onto its ``k`` largest entries (IHT).

    Args:
        keep: ``{plain_param_name: k}``; each ``k`` in ``0..numel``.
        every: project after every ``every``-th update (1 = classic IHT).
        reset_state: also zero the optimizer's per-parameter state (moments, momentum)
            at the entries that were zeroed.

    The projection also runs once before training if called as ``cb.project(model)``.
    Bad names or ``k`` larger than a layer are refused by :meth:`check` before training.
    """

    def __init__(self, keep: Mapping[str, int], every: int = 1, reset_state: bool = False):
        if isinstance(every, bool) or int(every) != every or every < 1:
            raise ConfigError(f"IHT 'every' must be an integer >= 1, got {every!r}")
        for name, k in keep.items():
            if isinstance(k, bool) or int(k) != k or k < 0:
                raise ConfigError(f"k for {name!r} must be an integer >= 0, got {k!r}")
        self.keep = {n: int(k) for n, k in keep.items()}
        self.every = int(every)
        self.reset_state = bool(reset_state)
        if not self.keep:
            raise ConfigError("HardThreshold needs at least one layer to threshold")

    def check(self, model: nn.Module) -> None:
        """One-line :class:`ConfigError` for a missing name or ``k`` above a layer's size."""
        for name, k in self.keep.items():
            w = _stored(model, name)
            if k > w.numel():
                raise ConfigError(
                    f"k={k} for {name!r} exceeds its {w.numel()} weights; choose k <= {w.numel()}"
                )

    @torch.no_grad()
    def project(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Apply ``H_k`` to every named weight in place."""
        for name, k in self.keep.items():
            w = _stored(model, name)
            mask = top_k_mask(w, k)
            w.mul_(mask.to(w.dtype))
            if self.reset_state and optimizer is not None:
                for v in optimizer.state.get(w, {}).values():
                    if isinstance(v, torch.Tensor) and v.shape == w.shape:
                        v.mul_(mask.to(v.dtype))

    def __call__(self, model: nn.Module, ctx: StepContext) -> None:
        if ctx.step == 1:
            self.check(model)
        if ctx.step % self.every == 0 or ctx.step == ctx.total:
            self.project(model, ctx.optimizer)


def support(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """``{name: bool mask of the non-zero stored entries}`` (the IHT iterate's support)."""
    return {n: (_stored(model, n).detach() != 0).cpu() for n in names}


__all__ = ["HardThreshold", "hard_threshold", "iht_keep_counts", "support", "top_k_mask"]
