"""A run's flat ``metrics``: the numbers its claims decide on, one name each.

Every ``summary.json`` carries ``metrics`` (``{name: number}``), which the run catalog,
``weightlab runs compare`` and the sweep plots read without knowing a recipe's layout. By
default they are the numeric leaves of each claim's ``evidence`` (the numbers the claim's
check compared against its thresholds), named ``<claim id>.<path>`` with list positions
as path parts, e.g. ``a.dense`` or ``a.gaps.1.gap_pts``. Booleans, strings and
non-finite numbers are left out (JSON has no NaN), so every value is a finite float. A
recipe may return its own names from :meth:`~weightlab.recipes.base.Recipe.metrics`.
"""

from __future__ import annotations

import math
from typing import Any


def _leaves(value: Any, path: str, out: dict[str, float]) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int | float):
        if math.isfinite(value):
            out[path] = float(value)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _leaves(v, f"{path}.{k}", out)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _leaves(v, f"{path}.{i}", out)


def claim_metrics(claims: list[dict]) -> dict[str, float]:
    """The numeric leaves of every claim's ``evidence``, as ``<claim id>.<path>: value``,
    in claim order then evidence order (a claim that was not tested contributes none)."""
    out: dict[str, float] = {}
    for c in claims:
        _leaves(c.get("evidence", {}), str(c["id"]), out)
    return out
