"""Declared, validated keyword parameters of a task (``load_dataset(name, **params)``).

Each :class:`Param` carries a default, a help line and the same range checks a recipe
config field carries (``min``, ``max``, ``gt``, ``lt``, ``choices``), so a recipe can
expose a task's parameters as config fields with :meth:`Param.checks`. List-valued
parameters (``"ints"``, ``"floats"``) are written as comma-separated strings
(``"64,64"``) so they stay flat scalars on the command line; a sequence is accepted too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from weightlab.errors import DataError

TYPES = ("int", "float", "str", "ints", "floats")
_CHECK_KEYS = ("min", "max", "gt", "lt", "choices")


@dataclass(frozen=True)
class Param:
    """One task parameter.

    Args:
        type: ``"int"``, ``"float"``, ``"str"``, or ``"ints"`` / ``"floats"`` (a
            comma-separated list; the loader receives a tuple, every element checked).
        min, max: inclusive bounds; gt, lt: exclusive bounds; choices: allowed values.
    """

    name: str
    type: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    gt: float | None = None
    lt: float | None = None
    choices: tuple | None = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:  # pragma: no cover - programming error
            raise ValueError(f"param {self.name}: unknown type {self.type!r}")

    def checks(self) -> dict[str, Any]:
        """The range checks as recipe-field metadata (only those that are set)."""
        return {k: getattr(self, k) for k in _CHECK_KEYS if getattr(self, k) is not None}

    def describe(self) -> str:
        return f"{self.name}={self.default!r}"

    def parse(self, value: Any) -> Any:
        """The checked value the loader receives; raises ``ValueError`` with the reason."""
        if self.type in ("ints", "floats"):
            elem = "int" if self.type == "ints" else "float"
            if isinstance(value, str):
                parts = [p.strip() for p in value.split(",") if p.strip()]
            elif isinstance(value, Sequence):
                parts = list(value)
            else:
                raise ValueError(f"must be a comma-separated list of {elem}s; got {value!r}")
            if not parts:
                raise ValueError(f"must list at least one {elem}; got {value!r}")
            return tuple(self._scalar(p, elem) for p in parts)
        return self._scalar(value, self.type)

    def _scalar(self, value: Any, kind: str) -> Any:
        if kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"must be a string; got {value!r}")
            v: Any = value
        elif kind == "int":
            if isinstance(value, str):
                try:
                    value = int(value.strip())
                except ValueError:
                    raise ValueError(f"must be an integer; got {value!r}") from None
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise ValueError(f"must be an integer; got {value!r}")
            v = int(value)
        else:  # float
            if isinstance(value, str):
                try:
                    value = float(value.strip())
                except ValueError:
                    raise ValueError(f"must be a number; got {value!r}") from None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"must be a number; got {value!r}")
            v = float(value)
            if not math.isfinite(v):
                raise ValueError(f"must be a finite number; got {value!r}")
        problem = check_value(v, self.checks())
        if problem:
            raise ValueError(problem)
        return v


_BOUNDS = (
    ("min", lambda a, b: a >= b, ">="),
    ("max", lambda a, b: a <= b, "<="),
    ("gt", lambda a, b: a > b, ">"),
    ("lt", lambda a, b: a < b, "<"),
)


def check_value(value: Any, checks: Mapping[str, Any]) -> str | None:
    """``None`` if ``value`` passes ``checks`` (``choices``, then for a number: finite,
    ``min``, ``max``, ``gt``, ``lt``), else the problem as ``"must be ...; got ..."``.
    The one check behind task parameters and recipe config fields."""
    choices = checks.get("choices")
    if choices is not None and value not in choices:
        return f"must be one of {', '.join(map(str, choices))}; got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number; got {value!r}"
    for key, ok, word in _BOUNDS:
        bound = checks.get(key)
        if bound is not None and not ok(value, bound):
            return f"must be {word} {bound}; got {value!r}"
    return None


def describe_params(params: Sequence[Param]) -> str:
    """``"n_train=1000, noise=0.1, ..."`` (or ``"none"``) for error messages."""
    return ", ".join(p.describe() for p in params) if params else "none"


def check_params(task: str, params: Sequence[Param], given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overridden by ``given``, every value parsed and range-checked.

    Raises a one-line :class:`DataError` naming the task's accepted parameters for an
    unknown key or a bad value.
    """
    by_name = {p.name: p for p in params}
    accepted = describe_params(params)
    for key in given:
        if key not in by_name:
            if not params:
                raise DataError(f"task {task!r} takes no parameters; got {key}={given[key]!r}")
            raise DataError(
                f"task {task!r} has no parameter {key!r}; its parameters (defaults) are: {accepted}"
            )
    out: dict[str, Any] = {}
    for p in params:
        value = given.get(p.name, p.default)
        try:
            out[p.name] = p.parse(value)
        except ValueError as e:
            raise DataError(
                f"task {task!r}: parameter {p.name} {e}; its parameters (defaults) are: {accepted}"
            ) from None
    return out
