"""The three-stage detector of grokking (Tian 2025, "Provable Scaling Laws of Feature
Emergence from Learning Dynamics of Grokking", row [#27]).

The paper splits training into a *lazy* stage ("top layer overfits to random hidden
representation and the model appears to memorize"), an *independent* stage (hidden units
learn features each on their own) and an *interactive* stage (features interact and the
model generalizes). This module marks the stages on measured curves with a fixed rule
(:data:`RULE`, printed by the recipe):

- ``t_mem``  = the first evaluation with train accuracy ``>= 0.99`` (:data:`MEM_TRAIN_ACC`);
- ``t_feat`` = the first evaluation with median Fourier concentration ``>= 0.3``
  (:data:`FEAT_CONCENTRATION`; :mod:`weightlab.dynamics.fourier`);
- ``t_gen``  = the first evaluation with test accuracy ``>= 0.95`` (:data:`GEN_TEST_ACC`);
- lazy = ``[0, t_mem)``, independent = ``[t_mem, t_feat)``, interactive = ``[t_feat, t_gen]``.

A time never reached within the curve is *censored*: ``None``, known only to exceed the
last evaluation (``budget``). A stage whose start is censored never began (``None``); one
whose end is censored is open (``(start, None)``). Times need not come in order: a run
whose features concentrate before it memorizes gets ``ordered = False`` and an empty
independent stage, reported as measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from weightlab.errors import ConfigError

MEM_TRAIN_ACC = 0.99
FEAT_CONCENTRATION = 0.3
GEN_TEST_ACC = 0.95
STAGES = ("lazy", "independent", "interactive")


def rule(
    mem: float = MEM_TRAIN_ACC, feat: float = FEAT_CONCENTRATION, gen: float = GEN_TEST_ACC
) -> str:
    """The detector's rule as one printable line."""
    return (
        f"t_mem = first evaluation with train accuracy >= {mem:g}; t_feat = first with median "
        f"Fourier concentration >= {feat:g}; t_gen = first with test accuracy >= {gen:g}; "
        "lazy = [0, t_mem), independent = [t_mem, t_feat), interactive = [t_feat, t_gen]; "
        "a time never reached is censored (after the last evaluation)"
    )


RULE = rule()


def first_at_least(steps: Sequence[int], values: Sequence[float], threshold: float) -> int | None:
    """The first step whose value is ``>= threshold`` (NaN never is); ``None`` if none."""
    if len(steps) != len(values):
        raise ConfigError(
            f"a curve needs one value per step; got {len(steps)} steps and {len(values)} values"
        )
    for s, v in zip(steps, values, strict=True):
        if v is not None and not math.isnan(float(v)) and float(v) >= threshold:
            return int(s)
    return None


@dataclass(frozen=True)
class Stages:
    """Stage times of one run (``None`` = censored: not reached by ``budget``, the last
    evaluated step)."""

    t_mem: int | None
    t_feat: int | None
    t_gen: int | None
    budget: int

    @property
    def censored(self) -> dict[str, bool]:
        return {k: getattr(self, k) is None for k in ("t_mem", "t_feat", "t_gen")}

    @property
    def ordered(self) -> bool:
        """``t_mem < t_feat < t_gen``, all three reached."""
        t = (self.t_mem, self.t_feat, self.t_gen)
        return None not in t and t[0] < t[1] < t[2]

    def intervals(self) -> dict[str, tuple[int, int | None] | None]:
        """``{stage: (start, end)}``; ``None`` for a stage that never began, ``end = None``
        for one still running at ``budget``. The independent stage of a run whose
        ``t_feat <= t_mem`` is empty: ``(t_mem, t_mem)``."""
        out: dict[str, tuple[int, int | None] | None] = {"lazy": (0, self.t_mem)}
        if self.t_mem is None:
            out["independent"] = None
        elif self.t_feat is None:
            out["independent"] = (self.t_mem, None)
        else:
            out["independent"] = (self.t_mem, max(self.t_mem, self.t_feat))
        out["interactive"] = None if self.t_feat is None else (self.t_feat, self.t_gen)
        return out

    def to_dict(self) -> dict:
        return {
            "t_mem": self.t_mem,
            "t_feat": self.t_feat,
            "t_gen": self.t_gen,
            "budget": self.budget,
            "censored": self.censored,
            "ordered": self.ordered,
            "intervals": {k: None if v is None else list(v) for k, v in self.intervals().items()},
        }


def _threshold(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and 0 < value <= 1):
        raise ConfigError(f"{name} threshold must lie in (0, 1], got {value!r}")
    return float(value)


def detect_stages(
    acc_steps: Sequence[int],
    train_acc: Sequence[float],
    test_acc: Sequence[float],
    conc_steps: Sequence[int],
    conc: Sequence[float],
    *,
    mem: float = MEM_TRAIN_ACC,
    feat: float = FEAT_CONCENTRATION,
    gen: float = GEN_TEST_ACC,
) -> Stages:
    """Stage times by :data:`RULE` (Tian 2025, row [#27]): accuracies (fractions in
    ``[0, 1]``) at ``acc_steps``, the median Fourier concentration at ``conc_steps``.
    ``budget`` is the last step of either curve."""
    mem, feat, gen = _threshold("mem", mem), _threshold("feat", feat), _threshold("gen", gen)
    if not acc_steps and not conc_steps:
        raise ConfigError("detect_stages needs at least one evaluated step")
    return Stages(
        first_at_least(acc_steps, train_acc, mem),
        first_at_least(conc_steps, conc, feat),
        first_at_least(acc_steps, test_acc, gen),
        int(max([*acc_steps, *conc_steps])),
    )


__all__ = [
    "FEAT_CONCENTRATION",
    "GEN_TEST_ACC",
    "MEM_TRAIN_ACC",
    "RULE",
    "STAGES",
    "Stages",
    "detect_stages",
    "first_at_least",
    "rule",
]
