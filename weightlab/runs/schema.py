"""Shape checks for the JSON files of a run directory.

Every JSON a run reads back (``config.json``, ``units/<key>.json``, ``summary.json``)
goes through one of these checks, so a file of the wrong shape (a ``config.json``
holding ``[]``, a unit without ``members``, a claim without a verdict) is reported as a
one-line :class:`~weightlab.errors.RunFileError` naming the file and the fix, never as
a traceback from deep inside a recipe.

The ``expect_*`` helpers raise :class:`ValueError` with a short description of the
problem; the ``check_*`` functions turn that into the one-line ``RunFileError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from weightlab.errors import RunFileError

VERDICTS: dict[str, bool | None] = {"held": True, "did not hold": False, "not tested": None}
_NUMBER = (int, float)


def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    if t is type(None):
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "true or false"}.get(
        t, "a number" if t in (int, float) else getattr(t, "__name__", str(t))
    )


def _is(value: Any, types: Any) -> bool:
    if value is None:
        return types is None or (isinstance(types, tuple) and type(None) in types)
    if isinstance(value, bool):  # JSON true/false are not numbers
        return types is bool or (isinstance(types, tuple) and bool in types)
    return isinstance(value, types)


def expect_fields(obj: Any, fields: Mapping[str, Any], where: str) -> dict:
    """``obj`` must be a JSON object whose ``fields`` have the given types (a type, a
    tuple of types; ``type(None)`` in the tuple allows null). Returns ``obj``."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where} is {_type_name(type(obj))}, not an object")
    for key, types in fields.items():
        if key not in obj:
            raise ValueError(f"{where} has no {key!r}")
        if not _is(obj[key], types):
            raise ValueError(f"{where}[{key!r}] should be {_type_name(types)}")
    return obj


def expect_list_of(obj: Any, fields: Mapping[str, Any], where: str) -> list[dict]:
    """``obj`` must be a list of JSON objects with ``fields`` (see :func:`expect_fields`)."""
    if not isinstance(obj, list):
        raise ValueError(f"{where} is {_type_name(type(obj))}, not a list")
    for i, item in enumerate(obj):
        expect_fields(item, fields, f"{where}[{i}]")
    return obj


def expect_claim(c: Any, where: str) -> dict:
    """A claim as recipes write it: id, quote, statement, held, verdict, detail, evidence."""
    expect_fields(
        c,
        {
            "id": str,
            "quote": str,
            "statement": str,
            "verdict": str,
            "detail": str,
            "evidence": dict,
            "held": (bool, type(None)),
        },
        where,
    )
    if c["verdict"] not in VERDICTS:
        raise ValueError(
            f"{where} has verdict {c['verdict']!r}, expected one of {', '.join(VERDICTS)}"
        )
    if VERDICTS[c["verdict"]] is not c["held"]:
        raise ValueError(f"{where}: verdict {c['verdict']!r} disagrees with held={c['held']}")
    if not c["quote"].strip():
        raise ValueError(f"{where} has an empty quote")
    return c


def expect_summary(s: Any) -> dict:
    """The fields every recipe's ``summary.json`` has."""
    expect_fields(s, {"recipe": str, "claims": list}, "the summary")
    for i, c in enumerate(s["claims"]):
        expect_claim(c, f"claims[{i}]")
    if "diverged_members" in s:
        d = s["diverged_members"]
        if not isinstance(d, list) or not all(isinstance(x, str) for x in d):
            raise ValueError("'diverged_members' is not a list of strings")
    if "members" in s and not _is(s["members"], int):
        raise ValueError("'members' is not a number")
    if "metrics" in s:
        expect_metrics(s["metrics"])
    return s


def expect_metrics(metrics: Any) -> dict:
    """A summary's ``metrics``: a flat ``{str: finite number}`` object."""
    if not isinstance(metrics, dict):
        raise ValueError("'metrics' is not an object")
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"'metrics' entry {k!r} is not a finite number")
    return metrics


def expect_config_record(r: Any) -> dict:
    return expect_fields(r, {"recipe": str, "config": dict, "non_default": dict}, "the record")


def expect_unit_record(r: Any) -> dict:
    return expect_fields(r, {"key": str, "metrics": dict, "has_tensors": bool}, "the record")


def _check(obj: Any, expect: Callable[[Any], Any], message: Callable[[str], str]) -> Any:
    try:
        expect(obj)
    except ValueError as e:
        raise RunFileError(message(str(e))) from None
    return obj


def check_config(obj: Any, path: Path) -> dict:
    """A run's ``config.json``."""
    return _check(
        obj,
        expect_config_record,
        lambda p: (
            f"run config {path} is malformed ({p}); delete its run directory "
            "(or choose another --out) and re-run"
        ),
    )


def check_unit(obj: Any, path: Path, metrics_check: Callable[[dict], Any] | None = None) -> dict:
    """A unit file; ``metrics_check`` (raising ``ValueError``) checks the recipe's metrics."""

    def expect(r: Any) -> None:
        expect_unit_record(r)
        if metrics_check is not None:
            metrics_check(r["metrics"])

    return _check(
        obj,
        expect,
        lambda p: f"unit file {path} is malformed ({p}); delete it and re-run to recompute it",
    )


def check_summary(obj: Any, path: Path) -> dict:
    """A run's ``summary.json``."""
    return _check(
        obj,
        expect_summary,
        lambda p: f"run summary {path} is malformed ({p}); re-run the recipe to recreate it",
    )
