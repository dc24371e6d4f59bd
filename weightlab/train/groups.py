"""Parameter groups: per-parameter learning-rate and weight-decay multipliers.

A :class:`~weightlab.train.ParamGroup` matches parameters by ``fnmatch`` globs over plain
parameter names (``"layers.0.weight"``, ``"*.bias"``) or by a
:class:`~weightlab.core.Selector` (which needs the model). Groups are tried in order and
the first match wins; unmatched parameters get multipliers ``(1, 1)``. Used for layer-wise
learning rates such as μP (Yang et al. 2021, "Tensor Programs V", Table 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from torch import nn

from weightlab.errors import ConfigError
from weightlab.train.config import ParamGroup


def describe_group(group: ParamGroup) -> str:
    """Short text for error messages: the globs, or the selector's fields."""
    if group.globs is not None:
        return "globs " + ", ".join(repr(p) for p in group.globs)
    return repr(group.match)


def group_members(
    names: Sequence[str], group: ParamGroup, model: nn.Module | None = None
) -> list[str]:
    """The names among ``names`` that ``group`` matches (ignoring earlier groups)."""
    if group.globs is not None:
        return [n for n in names if any(fnmatchcase(n, p) for p in group.globs)]
    m = group.match
    if not callable(m):
        raise ConfigError(
            f"a parameter group's match must be globs or a Selector, got {type(m).__name__}"
        )
    if model is None:
        raise ConfigError(
            "a parameter group with a Selector needs the model to resolve; pass model="
        )
    picked = set(m(model))
    return [n for n in names if n in picked]


def resolve_groups(
    names: Sequence[str], groups: Sequence[ParamGroup], model: nn.Module | None = None
) -> dict[str, tuple[float, float]]:
    """``{name: (lr_mult, wd_mult)}`` for every name in ``names`` (plain parameter names).

    First match wins; unmatched names get ``(1.0, 1.0)``. A group that matches no name at
    all raises :class:`ConfigError` listing the parameters.
    """
    names = list(names)
    out: dict[str, tuple[float, float]] = {}
    for i, group in enumerate(groups):
        hits = group_members(names, group, model)
        if not hits:
            raise ConfigError(
                f"parameter group {i} ({describe_group(group)}) matches no parameter; "
                f"parameters are: {', '.join(names)}"
            )
        for n in hits:
            out.setdefault(n, (float(group.lr_mult), float(group.wd_mult)))
    return {n: out.get(n, (1.0, 1.0)) for n in names}
