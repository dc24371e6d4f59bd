"""Pruning schedules: *when* a training-time pruner updates its mask, and to what sparsity.

A schedule answers :meth:`Schedule.sparsity_at`: the target sparsity (fraction of weights
removed) if the mask is updated after update ``step`` (1-based, as step callbacks see it;
``0`` means before the first update, applied by the pruner's ``prepare``), else ``None``.
The menu is jaxpruner's (Lee et al. 2023, "JaxPruner": no-update, one-shot, periodic,
polynomial):

- :class:`StaticSchedule`: one mask from step 0, never changed;
- :class:`OneShotSchedule`: prune once, after update ``step``;
- :class:`PeriodicSchedule`: every ``every`` steps from ``start`` (until ``end``), to a
  constant target;
- :class:`PolynomialSchedule`: gradual pruning of Zhu & Gupta (2017), "To prune, or not to
  prune", Eq. 1: ``s_t = s_f + (s_i - s_f)(1 - (t - t0)/(nΔt))^3`` for
  ``t ∈ {t0, t0 + Δt, ..., t0 + nΔt}`` (``power`` generalizes the exponent 3).

:func:`make_schedule` builds one by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from weightlab.errors import ConfigError

SCHEDULES = ("static", "one_shot", "periodic", "polynomial")


def _check_sparsity(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        raise ConfigError(f"{what} must be a number in [0, 1), got {value!r}")
    if not 0 <= value < 1:
        raise ConfigError(
            f"{what} must be in [0, 1) (density in (0, 1]), got {value}; 0.9 keeps 10%"
        )
    return value


def _check_step(value: int, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def density_of(sparsity: float) -> Fraction:
    """``1 - sparsity`` computed exactly on the decimal the sparsity prints as, so that
    sparsity 0.9 gives density exactly 1/10 (not 0.09999999999999998)."""
    s = sparsity if isinstance(sparsity, Fraction) else Fraction(repr(float(sparsity)))
    return 1 - s


class Schedule:
    """Base class. Subclasses define :meth:`sparsity_at` and :meth:`last_step`."""

    def sparsity_at(self, step: int) -> float | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def last_step(self) -> int | None:
        """The last step at which the mask changes (``None``: periodic without end)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def check(self, total: int) -> None:
        """Refuse a schedule whose last update lies past the run's ``total`` updates (it
        would silently never reach its target)."""
        last = self.last_step()
        if last is not None and last > total:
            raise ConfigError(
                f"{type(self).__name__} updates the mask at step {last}, but the run has "
                f"only {total} updates; end the schedule by step {total}"
            )


@dataclass(frozen=True)
class StaticSchedule(Schedule):
    """A fixed mask at ``sparsity`` from step 0 (jaxpruner's no-update schedule)."""

    sparsity: float

    def __post_init__(self) -> None:
        _check_sparsity(self.sparsity, "sparsity")

    def sparsity_at(self, step: int) -> float | None:
        return self.sparsity if step == 0 else None

    def last_step(self) -> int:
        return 0


@dataclass(frozen=True)
class OneShotSchedule(Schedule):
    """Prune to ``sparsity`` once, after update ``step`` (0: before training)."""

    sparsity: float
    step: int

    def __post_init__(self) -> None:
        _check_sparsity(self.sparsity, "sparsity")
        _check_step(self.step, "one-shot step")

    def sparsity_at(self, step: int) -> float | None:
        return self.sparsity if step == self.step else None

    def last_step(self) -> int:
        return self.step


@dataclass(frozen=True)
class PeriodicSchedule(Schedule):
    """Update to the constant ``sparsity`` at steps ``start, start + every, ...`` up to
    ``end`` (inclusive; ``None``: until training ends)."""

    sparsity: float
    every: int
    start: int = 0
    end: int | None = None

    def __post_init__(self) -> None:
        _check_sparsity(self.sparsity, "sparsity")
        _check_step(self.every, "periodic interval 'every'", minimum=1)
        _check_step(self.start, "periodic start")
        if self.end is not None and _check_step(self.end, "periodic end") < self.start:
            raise ConfigError(f"periodic end {self.end} lies before its start {self.start}")

    def sparsity_at(self, step: int) -> float | None:
        if step < self.start or (self.end is not None and step > self.end):
            return None
        return self.sparsity if (step - self.start) % self.every == 0 else None

    def last_step(self) -> int | None:
        if self.end is None:
            return None
        return self.start + (self.end - self.start) // self.every * self.every


@dataclass(frozen=True)
class PolynomialSchedule(Schedule):
    """Gradual pruning (Zhu & Gupta 2017, Eq. 1): from ``initial_sparsity`` ``s_i`` at
    step ``start`` ``t0`` to ``final_sparsity`` ``s_f`` at ``t0 + n·Δt``, updating every
    ``every`` ``Δt`` steps (``n`` = ``updates``)::

        s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n Δt)) ** power,   power = 3

    The mask is updated at ``t0, t0 + Δt, ..., t0 + nΔt`` (``n + 1`` updates) and held
    afterwards."""

    final_sparsity: float
    start: int
    every: int
    updates: int
    initial_sparsity: float = 0.0
    power: float = 3.0

    def __post_init__(self) -> None:
        _check_sparsity(self.final_sparsity, "final sparsity")
        _check_sparsity(self.initial_sparsity, "initial sparsity")
        if self.initial_sparsity > self.final_sparsity:
            raise ConfigError(
                f"initial sparsity {self.initial_sparsity} exceeds the final sparsity "
                f"{self.final_sparsity}; gradual pruning only removes weights"
            )
        _check_step(self.start, "gradual pruning start t0")
        _check_step(self.every, "gradual pruning interval Δt", minimum=1)
        _check_step(self.updates, "gradual pruning steps n", minimum=1)
        if not float(self.power) > 0:
            raise ConfigError(f"gradual pruning power must be > 0, got {self.power}")

    def value(self, step: int) -> float:
        """Eq. 1 at ``step`` clamped to ``[t0, t0 + nΔt]`` (the target in force there)."""
        span = self.updates * self.every
        t = min(max(step - self.start, 0), span)
        s_i, s_f = float(self.initial_sparsity), float(self.final_sparsity)
        return s_f + (s_i - s_f) * (1.0 - t / span) ** float(self.power)

    def sparsity_at(self, step: int) -> float | None:
        offset = step - self.start
        if offset < 0 or offset > self.updates * self.every or offset % self.every:
            return None
        if offset == self.updates * self.every:
            return self.final_sparsity  # exactly s_f (no float round-off at the end)
        return self.value(step)

    def last_step(self) -> int:
        return self.start + self.updates * self.every


_KINDS = {
    "static": StaticSchedule,
    "one_shot": OneShotSchedule,
    "periodic": PeriodicSchedule,
    "polynomial": PolynomialSchedule,
}


def make_schedule(name: str, **kwargs) -> Schedule:
    """A schedule by name (:data:`SCHEDULES`) with its dataclass fields as keywords, e.g.
    ``make_schedule("polynomial", final_sparsity=0.9, start=0, every=10, updates=20)``."""
    if name not in _KINDS:
        raise ConfigError(f"unknown pruning schedule {name!r}; use one of {', '.join(SCHEDULES)}")
    try:
        return _KINDS[name](**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad arguments for the {name!r} schedule: {e}") from None


__all__ = [
    "SCHEDULES",
    "OneShotSchedule",
    "PeriodicSchedule",
    "PolynomialSchedule",
    "Schedule",
    "StaticSchedule",
    "density_of",
    "make_schedule",
]
