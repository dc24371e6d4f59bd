"""Lazy export tables for the family packages.

A family package maps each exported name to its submodule and imports it on first access
(``module.__getattr__``). Where a name equals its submodule's name (``cka`` in
``probes/cka.py``, ``widen`` in ``growth/widen.py``), importing the submodule binds the
*module* to the package attribute (Python's import system does that), and from then on
``from weightlab.probes import cka`` would give the module, not the function.
:func:`guard_shadowed_names` gives such a package a module class whose attribute lookup
returns the exported object instead.
"""

from __future__ import annotations

import sys
import types


def guard_shadowed_names(package: str, exports: dict[str, str]) -> None:
    """Make ``package.NAME`` the exported object even after ``package.NAME`` (the submodule)
    has been imported, for every exported name equal to its submodule's name."""
    shadowed = frozenset(name for name, module in exports.items() if name == module)
    if not shadowed:
        return

    class _Package(types.ModuleType):
        def __getattribute__(self, name: str):
            value = super().__getattribute__(name)
            if name in shadowed and isinstance(value, types.ModuleType):
                value = getattr(value, name)
                super().__getattribute__("__dict__")[name] = value
            return value

    sys.modules[package].__class__ = _Package
