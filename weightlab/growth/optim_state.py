"""Optimizer state across a change of parameter shape (function-preserving growth).

When :func:`weightlab.growth.widen.widen` replaces a Parameter by a wider one, the optimizer
still holds the old object. :func:`rebind` puts the new Parameter in the old one's place in its
param group and moves the per-parameter state:

- ``state="carry"``: every state tensor shaped like the parameter is re-indexed with the same
  index map as the weights. Entries the growth copies keep their source's moments; entries it
  divides by the copy count ``k`` (a unit's outgoing weights, Net2WiderNet, Chen et al. 2016,
  Sec. 3.1) get first moments divided by ``k`` (Adam's ``m``, SGD's momentum buffer) and second
  moments by ``k²`` (Adam's ``v``), the moments of the divided weights' scale. Scalars (Adam's
  ``step``) are kept.
- ``state="reset"``: the grown parameter starts with empty state (Adam's step restarts at 0).

Parameters that growth inserts (a new layer) start with empty state in the group of the layer
they follow (:func:`add_params`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from weightlab.errors import ConfigError

__all__ = ["FIRST_MOMENTS", "SECOND_MOMENTS", "STATES", "add_params", "rebind"]

FIRST_MOMENTS = frozenset({"exp_avg", "momentum_buffer", "grad_avg"})
"""State keys that scale like the weight (divided by ``k`` with the weight)."""
SECOND_MOMENTS = frozenset({"exp_avg_sq", "max_exp_avg_sq", "square_avg"})
"""State keys that scale like the squared weight (divided by ``k²``)."""
STATES = ("carry", "reset")

#: ``regrow(tensor, power)``: the state tensor re-indexed like the weight, with the outgoing
#: entries divided by ``k ** power`` (power 1 for first moments, 2 for second moments).
Regrow = Callable[[torch.Tensor, int], torch.Tensor]


def check_state(state: str) -> None:
    """One-line :class:`ConfigError` for an unknown ``state`` option."""
    if state not in STATES:
        raise ConfigError(f"state must be 'carry' or 'reset', got {state!r}")


def _group_of(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> tuple[dict, int] | None:
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is param:
                return group, i
    return None


def check_known_state(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    """Refuse (before anything changes) to carry state whose scaling rule is unknown."""
    for p in params:
        for key, value in optimizer.state.get(p, {}).items():
            if (
                isinstance(value, torch.Tensor)
                and value.shape == p.shape
                and value.dim() > 0
                and key not in FIRST_MOMENTS | SECOND_MOMENTS
            ):
                raise ConfigError(
                    f"optimizer state {key!r} has no known rule under growth; "
                    "pass state='reset' to start grown tensors with empty state"
                )


def rebind(
    optimizer: torch.optim.Optimizer,
    old: torch.Tensor,
    new: torch.Tensor,
    regrow: Regrow | None,
) -> None:
    """Put ``new`` where ``old`` was in ``optimizer``'s param groups and move its state.

    ``regrow=None`` empties the state (``state="reset"``); otherwise every state tensor shaped
    like ``old`` becomes ``regrow(tensor, 1)`` (first moments) or ``regrow(tensor, 2)`` (second
    moments) and scalar entries are copied. A parameter the optimizer does not hold is skipped.
    """
    where = _group_of(optimizer, old)
    if where is None:
        return
    group, i = where
    group["params"][i] = new
    state = optimizer.state.pop(old, None)
    if not state or regrow is None:
        return
    moved: dict = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape == old.shape:
            moved[key] = regrow(value, 2 if key in SECOND_MOMENTS else 1)
        elif isinstance(value, torch.Tensor):
            moved[key] = value.clone()
        else:
            moved[key] = value
    optimizer.state[new] = moved


def add_params(
    optimizer: torch.optim.Optimizer, beside: torch.Tensor, params: list[torch.Tensor]
) -> None:
    """Append inserted ``params`` (empty state) to the param group that holds ``beside``;
    if no group holds it, to the first group."""
    where = _group_of(optimizer, beside)
    group = where[0] if where is not None else optimizer.param_groups[0]
    group["params"].extend(params)
