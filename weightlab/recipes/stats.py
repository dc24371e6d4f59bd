"""Statistics over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); NaNs propagate."""
    vals = [float("nan") if v is None else float(v) for v in values]
    n = len(vals)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(vals) / n
    if n == 1:
        return m, 0.0
    var = sum((v - m) ** 2 for v in vals) / (n - 1)
    return m, math.sqrt(var)


def paired_difference_ci(
    a: Sequence[float], b: Sequence[float], level: float = 0.90
) -> tuple[float, float, float]:
    """Mean of the paired differences ``a_i - b_i`` and its two-sided Student-t
    confidence interval at ``level`` (``(mean, low, high)``). With one pair the interval
    is unbounded (``-inf, inf``): one seed cannot show two arms agree. NaNs propagate."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length ({len(a)} vs {len(b)})")
    diffs = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    m, s = mean_std(diffs)
    n = len(diffs)
    if n < 2 or not math.isfinite(s):
        return m, -math.inf, math.inf
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, n - 1)) * s / math.sqrt(n)
    return m, m - half, m + half


def within_margin(
    a: Sequence[float], b: Sequence[float], margin: float, level: float = 0.90
) -> tuple[bool, dict]:
    """The test for a no-difference claim ("match", "comparable", "no improvement"): it
    holds only if the ``level`` confidence interval of the paired difference ``a - b``
    lies inside ``[-margin, margin]``. Returns ``(inside, evidence)``; a recipe pairs it
    with a positive control that must differ, so a test too weak to see any difference
    cannot pass."""
    m, lo, hi = paired_difference_ci(a, b, level)
    inside = math.isfinite(lo) and math.isfinite(hi) and -margin <= lo and hi <= margin
    return inside, {
        "mean_difference": m,
        "ci_low": lo,
        "ci_high": hi,
        "ci_level": level,
        "margin": margin,
        "pairs": len(a),
    }


def num(v: float | None) -> float:
    """A summary number as a float: JSON null (written for NaN or an empty mean) is NaN."""
    return math.nan if v is None else float(v)


def pm(mean: float | None, std: float | None, digits: int = 2) -> str:
    """``mean ± std`` for a report table; ``n/a`` when there is no finite mean (every
    member left out)."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {num(std):.{digits}f}"
