"""Preconditions every claim check shares, so no recipe judges a claim on a run that
learned nothing or on members that diverged.

A claim declares its preconditions as a list of checks; each check returns ``None``
when it is met or a one-phrase reason when it is not. :func:`judge` turns a failed
precondition into a ``not tested`` verdict carrying the reasons, and otherwise calls the
claim's own check. Thresholds are fixed here, not options:

- a classification baseline must reach at least :data:`CHANCE_MARGIN_PTS` points of
  test accuracy above chance, chance being the test split's majority-class rate
  (:func:`majority_rate`; 62.7% on breast cancer, 10% on balanced 10-class data);
- a regression baseline must reach R² >= :data:`MIN_R2` on the test split;
- no member whose numbers the claim reads may have diverged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch

from weightlab.recipes.base import ClaimResult
from weightlab.report.render import name_list

CHANCE_MARGIN_PTS = 10.0
MIN_R2 = 0.1
LATE_FRACTION = 0.1  # early stop in the last 10% of training: "still improving"


def majority_rate(labels: torch.Tensor) -> float:
    """Fraction of the most frequent class in ``labels`` (the accuracy of always
    predicting it): chance level for a classifier on that split."""
    if labels.numel() == 0:
        return float("nan")
    counts = torch.bincount(labels.reshape(-1).long().cpu())
    return float(counts.max()) / labels.numel()


def baseline_learned(
    value: float | None, kind: str = "classification", chance: float | None = None, name="dense"
) -> str | None:
    """Did the baseline learn? ``value``: its test accuracy in percent (classification,
    with ``chance`` in percent) or its test R² (regression). ``None`` when it did, else
    the reason."""
    if value is None or not math.isfinite(value):
        return f"the {name} baseline has no finite test metric"
    if kind == "regression":
        if value < MIN_R2:
            return f"the {name} baseline did not learn (test R² {value:.3f} < {MIN_R2:g})"
        return None
    if chance is None or not math.isfinite(chance):
        raise ValueError("a classification baseline needs the chance rate")
    if value < chance + CHANCE_MARGIN_PTS:
        return (
            f"the {name} baseline did not learn (test accuracy {value:.1f}% is less than "
            f"{CHANCE_MARGIN_PTS:g} pts above chance, {chance:.1f}%)"
        )
    return None


def no_divergence(diverged: Iterable[str]) -> str | None:
    """``None`` if no member in ``diverged`` (names of the members a claim reads that
    diverged), else the reason naming them."""
    names = list(dict.fromkeys(diverged))
    if not names:
        return None
    return f"{len(names)} member(s) it reads diverged: {name_list(names, 6)}"


def stopped_before_end(
    early_stop: float | None, last_step: float | None, name="dense"
) -> str | None:
    """An early-stopping iteration only measures learning speed if it precedes the last
    evaluation (otherwise the run was too short to see the minimum)."""
    if early_stop is None or last_step is None or not math.isfinite(early_stop):
        return f"the {name} early-stop iteration is unknown"
    if early_stop >= last_step:
        return (
            f"the {name} early-stop iteration ({early_stop:.0f}) is its last evaluation "
            f"({last_step:.0f}): train longer to see the minimum of the validation loss"
        )
    return None


def judge(
    claim_id: str,
    quote: str,
    statement: str,
    preconditions: Sequence[str | None],
    check: Callable[[], tuple[bool | None, str, dict]],
) -> ClaimResult:
    """The claim's verdict: ``not tested`` with the failed preconditions' reasons (also in
    ``evidence["not_tested_because"]``), else ``check()``'s ``(held, detail, evidence)``."""
    failed = [r for r in preconditions if r]
    if failed:
        return ClaimResult(
            claim_id,
            quote,
            statement,
            None,
            "; ".join(failed),
            {"not_tested_because": failed},
        )
    held, detail, evidence = check()
    return ClaimResult(claim_id, quote, statement, held, detail, evidence)


def still_improving(rows: list[dict], label: Callable[[dict], str]) -> list[str]:
    """Labels of the rows whose mean early-stopping step (``early_stop_mean``) lies in the
    last :data:`LATE_FRACTION` of training (``last_step_mean``): their validation loss was
    still falling, so a longer run could change them. Reported beside the claims."""
    return [
        label(r)
        for r in rows
        if r.get("last_step_mean")
        and r.get("early_stop_mean") is not None
        and math.isfinite(r["early_stop_mean"])
        and r["early_stop_mean"] >= (1 - LATE_FRACTION) * r["last_step_mean"]
    ]
