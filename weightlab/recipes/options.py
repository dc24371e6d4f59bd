"""Comma-separated list options shared by the recipes (``--widths 64,256,1024``).

Each parser checks the whole list before a recipe writes anything and, on bad input,
raises a one-line :class:`~weightlab.errors.ConfigError` naming the flag, the text given,
the offending value and what is expected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

from weightlab.errors import ConfigError

_T = TypeVar("_T", int, float)


def _split(text: str, flag: str, cast: Callable[[str], _T], noun: str, blank: bool) -> list[_T]:
    vals: list[_T] = []
    for item in text.split(","):
        if blank and not item.strip():
            continue
        try:
            vals.append(cast(item))
        except ValueError:
            article = "an" if noun == "integers" else "a"
            raise ConfigError(
                f"--{flag} must be comma-separated {noun}; got {text!r} "
                f"({item.strip()!r} is not {article} {noun[:-1]})"
            ) from None
    return vals


def _check(
    vals: Sequence[_T],
    text: str,
    flag: str,
    *,
    kind: str,
    out_of_range: Callable[[_T], str | None],
    min_count: int,
    distinct: bool,
    increasing: bool,
    sort: bool,
) -> list[_T]:
    count = f"at least {min_count} " if min_count > 1 else ""
    order = "strictly increasing " if increasing else "distinct " if distinct else ""
    expect = f"--{flag} must be {count}{order}{kind}; got {text!r}"
    if len(vals) < min_count:
        raise ConfigError(f"{expect} (found {len(vals)} value{'s' if len(vals) != 1 else ''})")
    for v in vals:
        why = out_of_range(v)
        if why:
            raise ConfigError(f"{expect} ({why})")
    if increasing:
        for a, b in zip(vals[:-1], vals[1:], strict=True):
            if not b > a:
                raise ConfigError(f"{expect} ({b:g} does not increase on {a:g})")
    elif distinct:
        seen: set[_T] = set()
        for v in vals:
            if v in seen:
                raise ConfigError(f"{expect} ({v:g} repeats)")
            seen.add(v)
    return sorted(vals) if sort else list(vals)


def int_list(
    text: str,
    flag: str,
    *,
    lo: int | None = 1,
    distinct: bool = True,
    increasing: bool = False,
    sort: bool = True,
    min_count: int = 1,
    skip_blank: bool = False,
) -> list[int]:
    """Parse ``text`` such as ``"64,256"`` into integers for the option ``--flag``.

    Args:
        text: the option's value.
        flag: the option's name without dashes, as the CLI spells it (``"n-values"``).
        lo: smallest allowed value (``None``: no lower bound).
        distinct: reject repeated values.
        increasing: require strictly increasing values in the order given.
        sort: return the values sorted ascending (otherwise in the order given).
        min_count: fewest values allowed.
        skip_blank: ignore blank items (``"1,,2"``, a trailing comma) instead of rejecting them.

    Raises:
        ConfigError: one line naming the flag, the text, the offending value and the
            expected form, e.g. ``--widths must be distinct positive integers; got '0,8'
            (0 is below 1)``.
    """
    vals = _split(text, flag, int, "integers", skip_blank)
    if lo is None:
        kind = "integers"
    elif lo == 1:
        kind = "positive integers"
    else:
        kind = f"integers >= {lo}"

    def out_of_range(v: int) -> str | None:
        return f"{v} is below {lo}" if lo is not None and v < lo else None

    return _check(
        vals,
        text,
        flag,
        kind=kind,
        out_of_range=out_of_range,
        min_count=min_count,
        distinct=distinct,
        increasing=increasing,
        sort=sort,
    )


def _bounds_kind(
    gt: float | None, ge: float | None, lt: float | None, le: float | None, finite: bool
) -> str:
    lower = (f"({gt:g}", gt) if gt is not None else (f"[{ge:g}", ge) if ge is not None else None
    upper = (f"{lt:g})", lt) if lt is not None else (f"{le:g}]", le) if le is not None else None
    if lower and upper:
        return f"numbers in {lower[0]}, {upper[0]}"
    fin = "finite " if finite else ""
    if gt == 0 and not upper:
        return f"positive {fin}numbers"
    if ge == 0 and not upper:
        return f"non-negative {fin}numbers"
    if lower:
        return f"{fin}numbers {'>' if gt is not None else '>='} {lower[1]:g}"
    if upper:
        return f"{fin}numbers {'<' if lt is not None else '<='} {upper[1]:g}"
    return f"{fin}numbers"


def float_list(
    text: str,
    flag: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    finite: bool = True,
    distinct: bool = True,
    increasing: bool = False,
    sort: bool = True,
    min_count: int = 1,
) -> list[float]:
    """Parse ``text`` such as ``"0.5,1,2"`` into floats for the option ``--flag``.

    Args:
        text: the option's value.
        flag: the option's name without dashes, as the CLI spells it.
        gt, ge, lt, le: strict / inclusive lower and upper bounds (``None``: unbounded).
        finite: reject ``inf`` and ``nan`` (a bound on both sides rejects them anyway).
        distinct, increasing, sort, min_count: as in :func:`int_list`.

    Raises:
        ConfigError: one line naming the flag, the text, the offending value and the
            expected form, e.g. ``--bounds must be distinct positive finite numbers; got
            '1,-2' (-2 is out of range)``.
    """
    if gt is not None and ge is not None or lt is not None and le is not None:
        raise ValueError("give at most one lower bound (gt/ge) and one upper bound (lt/le)")
    vals = _split(text, flag, float, "numbers", False)
    kind = _bounds_kind(gt, ge, lt, le, finite)

    def out_of_range(v: float) -> str | None:
        if math.isnan(v) and (finite or any(b is not None for b in (gt, ge, lt, le))):
            return "nan is not a number"
        if finite and math.isinf(v):
            return f"{v:g} is not finite"
        bad = (
            (gt is not None and not v > gt)
            or (ge is not None and not v >= ge)
            or (lt is not None and not v < lt)
            or (le is not None and not v <= le)
        )
        return f"{v:g} is out of range" if bad else None

    return _check(
        vals,
        text,
        flag,
        kind=kind,
        out_of_range=out_of_range,
        min_count=min_count,
        distinct=distinct,
        increasing=increasing,
        sort=sort,
    )
