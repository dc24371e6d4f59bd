"""Instrumentation of quantization-aware training: metrics, never interventions.

Both trackers are step callbacks ``cb(model, ctx)`` for :func:`weightlab.train.train`. They
read every tracked :class:`~weightlab.quant.quantizer.Quantizer`'s ``last_q`` (the integer
level index of each weight, left by the training-mode forward) and change nothing.

Which step a level belongs to. The loop runs, at step ``t``: forward (the quantizer records
``last_q``), backward, optimizer update, then the step callbacks. So the callback of step
``t`` sees ``ℓ_t``, the levels of the weights *before* update ``t`` (after ``t − 1``
updates; ``ℓ_1`` are the initial weights' levels). The change ``Δ_t = ℓ_t − ℓ_{t−1}`` seen at
step ``t ≥ 2`` is the one update ``t − 1`` made. The last update's effect is never seen (no
forward follows it). Every history below is indexed by the callback's step ``t``.

- :class:`OscillationTracker`: oscillation as OFQ measures it (Liu et al. 2023, Sec. 3)
  after Nagel et al. (2022, "Overcoming Oscillations in Quantization-Aware Training",
  Eq. 5-6): a weight oscillates at step ``t`` when its level changes (``Δ_t ≠ 0``) in the
  direction opposite to its last change (``sign Δ_t = −sign Δ_τ``, ``τ`` the last step with
  a change). The per-weight rate is the EMA ``f_t = m·o_t + (1 − m)·f_{t−1}``, ``m = 0.01``,
  ``f = 0`` until the second observation. Per layer and overall, every step: the mean rate
  and the number of oscillating weights (history per step; :meth:`epoch_means` averages it
  per epoch).
- :class:`FreezingTracker`: DenseShift's freezing metric (Li et al. 2023): the share of
  weights whose level has not changed over the last ``W`` steps (default 100), i.e.
  ``ℓ_{t−W} = … = ℓ_t``; undefined (NaN) until ``W`` changes have been observable
  (``t > W``). Per layer and overall, every step.
- :func:`level_shares`: the share of weights at each level of a quantizer.

Weights a mask prunes (the quantizer's ``valid`` entries are false) are left out of every
mean, count and share: they never change level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.quant.fake import quantize_levels
from weightlab.quant.granularity import group_view
from weightlab.quant.quantizer import Quantizer, quantizers
from weightlab.quant.scales import estimate

OVERALL = "overall"


class _LevelTracker:
    """Shared plumbing: which quantizers, freshness of ``last_q``, masks, histories."""

    def __init__(self, quantizers: Mapping[str, Quantizer] | None = None) -> None:
        self.quantizers: dict[str, Quantizer] | None = None
        if quantizers is not None:
            self._bind(dict(quantizers))
        self.steps: list[int] = []
        self._seen: dict[str, torch.Tensor] = {}

    def _bind(self, qs: dict[str, Quantizer]) -> None:
        if not qs:
            raise ConfigError("no quantizer to track; attach quantizers (quantize) first")
        for q in qs.values():
            q.track = True
        self.quantizers = qs

    def _levels(self, model: nn.Module) -> dict[str, torch.Tensor]:
        if self.quantizers is None:
            qs = {n: q for n, q in quantizers(model).items() if q.track}
            if not qs:
                raise ConfigError(
                    "no tracked quantizer in the model; set track=True on its quantizers (or "
                    "pass them to the tracker)"
                )
            self._bind(qs)
        out = {}
        for name, q in self.quantizers.items():
            lq = q.last_q
            if lq is None or self._seen.get(name) is lq:
                raise ConfigError(
                    f"quantizer {name!r} recorded no level at this step; track it (track=True) "
                    "and call the tracker from train()'s callbacks (training-mode forwards)"
                )
            self._seen[name] = lq
            out[name] = lq
        return out

    def _masked(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``x``'s entries the quantizer's mask keeps (read every step: masks may change)."""
        q = None if self.quantizers is None else self.quantizers.get(name)
        v = None if q is None else q._valid_ref
        return x if v is None else x[v.to(x.device).bool()]

    def layer_names(self) -> list[str]:
        return [] if self.quantizers is None else [*self.quantizers, OVERALL]


class OscillationTracker(_LevelTracker):
    """Oscillation of integer levels (OFQ after Nagel et al. 2022; see the module doc).

    Args:
        quantizers: ``{name: Quantizer}`` to track (their ``track`` is switched on), or
            None: every quantizer of the model with ``track=True`` at the first call.
        momentum: the EMA's ``m`` (0.01).

    After training: ``rate[name]`` the per-weight EMA (a tensor of the weight's shape);
    ``history[name]`` / ``history["overall"]``: per step, the mean rate over the layer's
    (overall: all tracked) weights; ``counts[name]`` / ``counts["overall"]``: per step, the
    number of weights that oscillated at that step; ``steps``: the callback steps.
    """

    def __init__(
        self, quantizers: Mapping[str, Quantizer] | None = None, *, momentum: float = 0.01
    ) -> None:
        if not 0.0 < momentum <= 1.0:
            raise ConfigError(f"the oscillation EMA momentum must lie in (0, 1], got {momentum}")
        super().__init__(quantizers)
        self.momentum = float(momentum)
        self.rate: dict[str, torch.Tensor] = {}
        self.history: dict[str, list[float]] = {}
        self.counts: dict[str, list[int]] = {}
        self._prev: dict[str, torch.Tensor] = {}
        self._dir: dict[str, torch.Tensor] = {}

    def observe(self, levels: Mapping[str, torch.Tensor], step: int) -> None:
        """Feed one step's levels ``{name: int tensor}`` (what the callback does with
        ``last_q``; usable directly on hand-made level sequences)."""
        m = self.momentum
        total_rate, total_count, total_n = 0.0, 0, 0
        for name, q in levels.items():
            q = q.detach()
            if name not in self._prev:  # first observation: the reference, no change yet
                self._prev[name] = q.clone()
                self._dir[name] = torch.zeros(q.shape, dtype=torch.int8, device=q.device)
                self.rate[name] = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
                osc = torch.zeros(q.shape, dtype=torch.bool, device=q.device)
            else:
                d = torch.sign(q.to(torch.int32) - self._prev[name].to(torch.int32)).to(torch.int8)
                changed = d != 0
                osc = changed & (self._dir[name] == -d)
                self._dir[name] = torch.where(changed, d, self._dir[name])
                self.rate[name].mul_(1.0 - m).add_(osc.to(torch.float32), alpha=m)
                self._prev[name] = q.clone()
            rate = self._masked(name, self.rate[name])
            n = rate.numel()
            r_sum = float(rate.sum())
            c = int(self._masked(name, osc).sum())
            self.history.setdefault(name, []).append(r_sum / n if n else math.nan)
            self.counts.setdefault(name, []).append(c)
            total_rate, total_count, total_n = total_rate + r_sum, total_count + c, total_n + n
        self.history.setdefault(OVERALL, []).append(total_rate / total_n if total_n else math.nan)
        self.counts.setdefault(OVERALL, []).append(total_count)
        self.steps.append(int(step))

    def __call__(self, model: nn.Module, ctx) -> None:
        self.observe(self._levels(model), ctx.step)

    def late_mean(self, fraction: float = 0.2, name: str = OVERALL) -> float:
        """Mean of ``history[name]`` over the last ``fraction`` of the recorded steps (at
        least one step): the recipe's "oscillation rate"."""
        return late_mean(self.history[name], fraction)

    def epoch_means(self, steps_per_epoch: int, name: str = OVERALL) -> list[float]:
        """``history[name]`` averaged per epoch (``steps_per_epoch`` steps each)."""
        return epoch_means(self.history[name], steps_per_epoch)

    def total_counts(self) -> dict[str, int]:
        """Oscillations summed over all steps, per layer and overall."""
        return {n: int(sum(c)) for n, c in self.counts.items()}


class FreezingTracker(_LevelTracker):
    """DenseShift's freezing metric (see the module doc): per step, the share of weights
    whose level did not change over the last ``window`` steps, per layer and overall
    (``history``; NaN while ``t ≤ window``, fewer than ``window`` changes observable)."""

    def __init__(
        self, quantizers: Mapping[str, Quantizer] | None = None, *, window: int = 100
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"the freezing window must be a positive integer, got {window!r}")
        super().__init__(quantizers)
        self.window = window
        self.history: dict[str, list[float]] = {}
        self._prev: dict[str, torch.Tensor] = {}
        self._last_change: dict[str, torch.Tensor] = {}
        self._observed = 0

    def observe(self, levels: Mapping[str, torch.Tensor], step: int) -> None:
        """Feed one step's levels ``{name: int tensor}``."""
        self._observed += 1
        k = self._observed  # observations so far; changes observable: k - 1
        frozen_total, n_total = 0, 0
        for name, q in levels.items():
            q = q.detach()
            if name not in self._prev:
                self._prev[name] = q.clone()
                self._last_change[name] = torch.full(q.shape, k, dtype=torch.int64, device=q.device)
            else:
                changed = q != self._prev[name]
                self._last_change[name][changed] = k
                self._prev[name] = q.clone()
            if k - 1 >= self.window:
                frozen = self._last_change[name] <= k - self.window
                f = self._masked(name, frozen)
                n = f.numel()
                c = int(f.sum())
                self.history.setdefault(name, []).append(c / n if n else math.nan)
                frozen_total, n_total = frozen_total + c, n_total + n
            else:
                self.history.setdefault(name, []).append(math.nan)
        share = frozen_total / n_total if n_total else math.nan
        self.history.setdefault(OVERALL, []).append(share)
        self.steps.append(int(step))

    def __call__(self, model: nn.Module, ctx) -> None:
        self.observe(self._levels(model), ctx.step)

    def epoch_means(self, steps_per_epoch: int, name: str = OVERALL) -> list[float]:
        """``history[name]`` averaged per epoch (NaN steps left out; NaN if all are)."""
        return epoch_means(self.history[name], steps_per_epoch)

    def final(self, name: str = OVERALL) -> float:
        return self.history[name][-1] if self.history.get(name) else math.nan


def current_scale(
    quantizer: Quantizer, weight_view: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``(scale, zero_point)`` the quantizer's next training forward would use for the
    weight viewed ``(A, G, g)``, without changing the quantizer: a statistics scale
    (StatsQ) re-estimated from the weight (mask respected), else the stored or learned one."""
    spec = quantizer.spec
    with torch.no_grad():
        if spec.scale == "stats":
            valid = quantizer._valid_ref
            vv = (
                None if valid is None else group_view(valid.to(weight_view.dtype), spec.granularity)
            )
            return estimate(quantizer.levels, weight_view.detach(), "stats", vv)
        zp = quantizer.zero_point
        return quantizer.scale.detach().to(weight_view.dtype), zp


def grid_positions(quantizer: Quantizer, weight: torch.Tensor) -> torch.Tensor:
    """The pre-rounding grid position ``t`` of every entry of ``weight`` (its shape), zero
    point included: what the quantizer's next training forward records as ``last_t``."""
    with torch.no_grad():
        wv = group_view(weight.detach(), quantizer.spec.granularity)
        scale, zp = current_scale(quantizer, wv)
        t = quantizer.levels.encode(wv * (1.0 / scale))
        if zp is not None:
            t = t + zp
        return t.reshape(weight.shape)


def level_shares(quantizer: Quantizer, weight: torch.Tensor) -> torch.Tensor:
    """The share of ``weight``'s entries at each level of ``quantizer`` (float64, length
    ``n_levels``, index ``k`` ↔ integer level ``qmin + k``; the normalized level values are
    ``quantizer.levels.levels()``). Nearest rounding under :func:`current_scale` (a
    statistics scale is re-estimated from ``weight``, as the forward does). Entries a mask
    prunes are left out."""
    lv = quantizer.levels
    with torch.no_grad():
        w = weight.detach()
        wv = group_view(w, quantizer.spec.granularity)
        scale, zp = current_scale(quantizer, wv)
        _, q = quantize_levels(wv, lv, scale, zp)
        q = q.reshape(w.shape).to(torch.int64) - lv.qmin
        valid = quantizer._valid_ref
        if valid is not None:
            q = q[valid.bool()]
        counts = torch.bincount(q.reshape(-1), minlength=lv.n_levels).to(torch.float64)
        return counts / max(1, q.numel())


def late_mean(values: list[float], fraction: float = 0.2) -> float:
    """Mean over the last ``fraction`` of ``values`` (at least one value), NaNs left out."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"the late fraction must lie in (0, 1], got {fraction}")
    if not values:
        return math.nan
    k = max(1, math.ceil(fraction * len(values)))
    tail = [v for v in values[-k:] if not math.isnan(v)]
    return sum(tail) / len(tail) if tail else math.nan


def epoch_means(values: list[float], steps_per_epoch: int) -> list[float]:
    """``values`` averaged over consecutive blocks of ``steps_per_epoch`` (NaNs left out)."""
    if steps_per_epoch < 1:
        raise ConfigError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
    out = []
    for i in range(0, len(values), steps_per_epoch):
        block = [v for v in values[i : i + steps_per_epoch] if not math.isnan(v)]
        out.append(sum(block) / len(block) if block else math.nan)
    return out


__all__ = [
    "FreezingTracker",
    "OscillationTracker",
    "current_scale",
    "epoch_means",
    "grid_positions",
    "late_mean",
    "level_shares",
]
