"""The recipe registry, discovered from the family packages (no hand-edited list).

Every module under ``weightlab/recipes/<family>/`` (``<family>`` in
:data:`~weightlab.recipes.base.FAMILIES`) is imported; each :class:`Recipe` subclass
defined there with its own ``name`` is registered. A recipe whose ``family`` is not the
package it lives in, or two recipes with one name, are refused with a one-line error.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from weightlab.errors import ConfigError
from weightlab.recipes.base import FAMILIES, Recipe


def _recipes_in(family: str) -> list[type[Recipe]]:
    pkg = importlib.import_module(f"weightlab.recipes.{family}")
    found = []
    for info in sorted(pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."), key=str):
        mod = importlib.import_module(info.name)
        for obj in vars(mod).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, Recipe)
                and obj.__module__ == mod.__name__
                and "name" in vars(obj)
            ):
                found.append(obj)
    return found


def discover() -> dict[str, type[Recipe]]:
    """Import every family package's modules and collect their recipes, by name."""
    out: dict[str, type[Recipe]] = {}
    for family in FAMILIES:
        for cls in _recipes_in(family):
            where = f"{cls.__module__}.{cls.__qualname__}"
            if getattr(cls, "family", None) != family:
                raise ConfigError(
                    f"recipe {cls.name!r} ({where}) declares family "
                    f"{getattr(cls, 'family', None)!r} but lives in recipes/{family}/; "
                    "move it or fix its family"
                )
            if cls.name in out:
                other = out[cls.name]
                raise ConfigError(
                    f"two recipes are named {cls.name!r}: {other.__module__}.{other.__qualname__} "
                    f"and {where}; rename one"
                )
            out[cls.name] = cls
    return dict(sorted(out.items()))


@cache
def all_recipes() -> dict[str, type[Recipe]]:
    """The registered recipes by name (discovered once per process)."""
    return discover()


def recipes_by_family(family: str | None = None) -> dict[str, list[type[Recipe]]]:
    """``{family: [recipe classes sorted by name]}`` over :data:`FAMILIES`, in that order
    (families without recipes included); ``family`` restricts it to one."""
    if family is not None and family not in FAMILIES:
        raise ConfigError(f"unknown family {family!r}; choose one of: {', '.join(FAMILIES)}")
    fams = FAMILIES if family is None else (family,)
    regs = all_recipes()
    return {f: [c for c in regs.values() if c.family == f] for f in fams}


def get_recipe(name: str) -> Recipe:
    """A fresh instance of the recipe called ``name``."""
    regs = all_recipes()
    if name not in regs:
        raise ConfigError(
            f"unknown recipe {name!r}; choose one of: {', '.join(sorted(regs))} "
            "(see 'weightlab recipes')"
        )
    return regs[name]()


def __getattr__(attr: str):
    if attr == "RECIPES":  # the registry as a dict, discovered on first use
        return all_recipes()
    raise AttributeError(attr)
