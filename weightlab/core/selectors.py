"""Selectors: which parameters an operation touches.

A :class:`Selector` picks parameters of a model by module type, parameter name,
module-name pattern (``fnmatch`` globs) and role (first / last weighted layer), with
explicit excludes. ``select(model)`` returns an ordered ``{param_name: (module, attr)}``
map whose names are the model's *plain* parameter names (``layers.0.weight``), also when
transforms are attached.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from torch import nn
from torch.nn.utils import parametrize

from weightlab.errors import ConfigError

WEIGHTED_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TYPE_NAMES = {
    "linear": (nn.Linear,),
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
    "weighted": WEIGHTED_TYPES,
}


@dataclass(frozen=True)
class Selector:
    """Which parameters to touch.

    Args:
        types: module kinds: ``"linear"``, ``"conv"``, ``"weighted"`` (both) or classes.
        param: parameter attribute on the module (``"weight"``, ``"bias"``).
        include: module-name globs to keep (empty: all).
        exclude: module-name globs to drop.
        roles: subset of ``{"first", "last", "hidden"}`` among the weighted layers in
            module order (empty: all roles).
    """

    types: tuple = ("weighted",)
    param: str = "weight"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    roles: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        bad = set(self.roles) - {"first", "last", "hidden"}
        if bad:
            raise ConfigError(f"unknown selector role(s) {sorted(bad)}; use first, last or hidden")
        for t in self.types:
            if isinstance(t, str) and t not in _TYPE_NAMES:
                raise ConfigError(
                    f"unknown module type {t!r}; use one of {sorted(_TYPE_NAMES)} or a class"
                )

    def _classes(self) -> tuple[type[nn.Module], ...]:
        out: list[type[nn.Module]] = []
        for t in self.types:
            out.extend(_TYPE_NAMES[t] if isinstance(t, str) else (t,))
        return tuple(out)

    def __call__(self, model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
        classes = self._classes()
        weighted = [(n, m) for n, m in model.named_modules() if isinstance(m, classes)]
        picked: dict[str, tuple[nn.Module, str]] = {}
        for i, (name, module) in enumerate(weighted):
            roles = {"first"} if i == 0 else set()
            if i == len(weighted) - 1:
                roles.add("last")
            if not roles:
                roles.add("hidden")
            if self.roles and not roles & set(self.roles):
                continue
            if self.include and not any(fnmatchcase(name, p) for p in self.include):
                continue
            if any(fnmatchcase(name, p) for p in self.exclude):
                continue
            if not _has_param(module, self.param):
                continue
            picked[f"{name}.{self.param}" if name else self.param] = (module, self.param)
        return picked


def _has_param(module: nn.Module, attr: str) -> bool:
    if parametrize.is_parametrized(module, attr):
        return True
    return isinstance(getattr(module, attr, None), nn.Parameter)


def select(
    model: nn.Module,
    types: Sequence = ("weighted",),
    *,
    param: str = "weight",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    roles: Sequence[str] = (),
) -> dict[str, tuple[nn.Module, str]]:
    """Shorthand for ``Selector(...)(model)``."""
    return Selector(tuple(types), param, tuple(include), tuple(exclude), tuple(roles))(model)


_PARAMETRIZED = re.compile(r"(^|\.)parametrizations\.([^.]+)\.original$")
_TRANSFORM_STATE = re.compile(r"(^|\.)parametrizations\.")


def plain_name(name: str) -> str:
    """``layers.0.parametrizations.weight.original`` -> ``layers.0.weight`` (also for a
    parametrized top-level module: ``parametrizations.weight.original`` -> ``weight``);
    other names are returned unchanged."""
    return _PARAMETRIZED.sub(r"\1\2", name)


def is_transform_state(name: str) -> bool:
    """Whether a parameter/buffer name lies inside a parametrization (transform state such
    as a mask buffer or the stored ``original``)."""
    return _TRANSFORM_STATE.search(name) is not None
