"""Training dynamics (issue 23): analytic learning curves, SGLD, stage and Fourier probes,
path norms, dense Hebbian memories. See docs/architecture.md, "## Training dynamics".
Names are imported lazily."""

from __future__ import annotations

import importlib

from weightlab.lazy import guard_shadowed_names

_EXPORTS: dict[str, str] = {}

__all__ = sorted(_EXPORTS)


guard_shadowed_names(__name__, _EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"weightlab.dynamics.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'weightlab.dynamics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
