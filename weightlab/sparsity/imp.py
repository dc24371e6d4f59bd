"""Iterative magnitude pruning (IMP) with rewinding: finding lottery tickets.

Frankle & Carbin (2019), "The Lottery Ticket Hypothesis", Sec. 2, "Identifying winning
tickets":

1. randomly initialize a network ``f(x; θ0)``;
2. train it for ``j`` iterations, arriving at ``θj``;
3. prune ``p%`` of the (remaining) parameters with the smallest magnitudes, creating a
   mask ``m``;
4. reset the remaining parameters to their values in ``θ0``: the ticket is ``f(x; m ⊙ θ0)``;

and repeat 2-4 (iterative pruning): "each round prunes p^(1/n)% of the weights that
survive the previous round". For LeNet-300-100 the paper prunes 20% per round in the
hidden layers and 10% in the output layer. Rewinding to iteration ``k`` instead of 0
(step 4 resets to ``θk``) is from Frankle et al. (2020), "Linear Mode Connectivity and
the Lottery Ticket Hypothesis".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from weightlab.core.mask import apply_masks, density
from weightlab.core.selectors import Selector
from weightlab.core.snapshots import restore_snapshot, take_snapshot
from weightlab.data.task import TaskData
from weightlab.errors import ConfigError
from weightlab.sparsity.allocation import (
    _check_rate,
    global_masks,
    global_removals,
    layer_rates,
    layerwise_masks,
    round_half_up,
)
from weightlab.sparsity.scores import magnitude_scores, weights_of
from weightlab.train.config import TrainConfig
from weightlab.train.loop import TrainResult, train
from weightlab.train.order import steps_per_epoch

SCOPES = ("layerwise", "global")


def _removals(alive: Mapping[str, int], rates: Mapping[str, float], scope: str) -> dict[str, int]:
    """How many weights a round removes: per layer (``layerwise``) or, for ``global``, the
    total over the pool under the key ``"*"``. Shared by :func:`imp_step` and
    :func:`density_schedule` so that the schedule is exactly what IMP does."""
    if scope == "layerwise":
        return {n: round_half_up(rates[n], a) for n, a in alive.items()}
    pool = [n for n in alive if rates[n] > 0]
    return {"*": global_removals({n: alive[n] for n in pool}, rates)}


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise ConfigError(f"unknown pruning scope {scope!r}; use 'layerwise' or 'global'")


def imp_step(
    weights: Mapping[str, torch.Tensor],
    prev_masks: Mapping[str, torch.Tensor] | None,
    rates: Mapping[str, float],
    scope: str = "layerwise",
) -> dict[str, torch.Tensor]:
    """One IMP pruning step (Frankle & Carbin 2019, Sec. 2, step 3): remove the fraction
    ``rates[name]`` of the weights still alive in ``prev_masks`` with the smallest
    magnitude. Returns bool masks nested in ``prev_masks`` (all alive if ``None``).

    - ``layerwise``: layer ``l`` removes ``round-half-up(rate_l · alive_l)`` weights.
    - ``global``: one magnitude threshold over the layers with ``rate > 0`` (the pool)
      removes :func:`~weightlab.sparsity.allocation.global_removals` weights, exactly the
      total layer-wise pruning with the same rates would remove (the alive-weighted mean
      rate; Frankle & Carbin 2019, Sec. 4, prune deep convnets globally); layers with
      rate 0 keep their masks.
    """
    _check_scope(scope)
    names = list(weights)
    for n in names:
        if n not in rates:
            raise ConfigError(
                f"no pruning rate for {n!r}; build rates with layer_rates(names, ...)"
            )
        _check_rate(rates[n], f"pruning rate for {n!r}", allow_zero=True)
    scores = magnitude_scores(dict(weights))
    if prev_masks is None:
        prev = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    else:
        prev = {}
        for n in names:
            if n not in prev_masks:
                raise ConfigError(f"previous masks have no entry for {n!r}; pass one per layer")
            prev[n] = prev_masks[n]
    alive = {}
    for n in names:
        if prev[n].shape != scores[n].shape:
            raise ConfigError(
                f"previous mask for {n!r} has shape {tuple(prev[n].shape)}, "
                f"weight has {tuple(scores[n].shape)}"
            )
        alive[n] = int(torch.count_nonzero(prev[n]))
    remove = _removals(alive, rates, scope)
    if scope == "layerwise":
        keep = {n: alive[n] - remove[n] for n in names}
        return layerwise_masks(scores, keep, prev)
    pool = [n for n in names if rates[n] > 0]
    kept = global_masks(
        {n: scores[n] for n in pool},
        sum(alive[n] for n in pool) - remove["*"],
        {n: prev[n] for n in pool},
    )
    return {n: kept[n] if n in kept else prev[n].bool().clone() for n in names}


@dataclass(frozen=True)
class IMPConfig:
    """Settings of iterative magnitude pruning (defaults: LeNet-300-100 in Frankle & Carbin
    2019, Sec. 2).

    Args:
        rate: fraction of the remaining weights pruned per round, in (0, 1).
        rate_overrides: per-layer rates keyed by ``"first"``, ``"last"`` or a name glob
            (see :func:`~weightlab.sparsity.allocation.layer_rates`); the paper prunes the
            output layer at half the rate (``{"last": 0.1}``).
        scope: ``"layerwise"`` (each layer by its own rate) or ``"global"`` (one
            magnitude threshold across layers, removing the mean rate of the remaining
            weights; layers with override 0 stay dense).
        target_density: stop after the first round whose overall density is <= this.
        max_rounds: stop after this many pruning rounds at the latest.
        rewind: ``"init"`` (reset survivors to θ0, Frankle & Carbin 2019) or an integer
            step ``k`` (reset to θk, Frankle et al. 2020, "Linear Mode Connectivity and the
            Lottery Ticket Hypothesis"); ``0`` is the same as ``"init"``.
    """

    rate: float = 0.2
    rate_overrides: Mapping[str, float] = field(default_factory=lambda: {"last": 0.1})
    scope: str = "layerwise"
    target_density: float = 0.05
    max_rounds: int = 30
    rewind: str | int = "init"

    def __post_init__(self) -> None:
        _check_rate(self.rate, "pruning rate")
        for key, value in dict(self.rate_overrides or {}).items():
            _check_rate(value, f"pruning rate override {key!r}", allow_zero=True)
        _check_scope(self.scope)
        if not 0.0 < float(self.target_density) < 1.0:
            raise ConfigError(f"target density must be in (0, 1), got {self.target_density}")
        if isinstance(self.max_rounds, bool) or int(self.max_rounds) != self.max_rounds:
            raise ConfigError(f"max_rounds must be an integer >= 1, got {self.max_rounds!r}")
        if self.max_rounds < 1:
            raise ConfigError(f"max_rounds must be >= 1, got {self.max_rounds}")
        r = self.rewind
        if isinstance(r, str) and r.strip().isdigit():
            object.__setattr__(self, "rewind", int(r))
        elif not (r == "init" or (isinstance(r, int) and not isinstance(r, bool) and r >= 0)):
            raise ConfigError(f"rewind must be 'init' or a training step k >= 0, got {r!r}")

    @property
    def rewind_step(self) -> int:
        """The step whose weights survivors are reset to (0 for ``"init"``)."""
        return 0 if self.rewind == "init" else int(self.rewind)


def density_schedule(shapes: Mapping[str, torch.Size], cfg: IMPConfig) -> list[float]:
    """The overall densities IMP visits, starting with 1.0 (the dense round 0), computed
    from exact counts without training: rounds continue until the density is
    ``<= cfg.target_density``, ``cfg.max_rounds`` rounds are done, or a round would prune
    nothing. ``len(schedule) - 1`` is the number of pruning rounds.

    Layer-wise IMP removes ``round-half-up(rate_l · alive_l)`` per layer, so the schedule
    is exact. A ``global`` round removes the same total
    (:func:`~weightlab.sparsity.allocation.global_removals`), but where the removals fall
    depends on the weights; the schedule keeps the layer-wise bookkeeping, so it is exact
    for the first global round and, after it, agrees with the trained masks to within the
    per-layer rounding (a few weights per round)."""
    names = list(shapes)
    if not names:
        raise ConfigError("density_schedule needs at least one layer")
    rates = layer_rates(names, cfg.rate, cfg.rate_overrides)
    alive = {n: int(torch.Size(s).numel()) for n, s in shapes.items()}
    total = sum(alive.values())
    schedule = [1.0]
    for _ in range(cfg.max_rounds):
        if schedule[-1] <= cfg.target_density:
            break
        remove = _removals(alive, rates, "layerwise")
        if sum(remove.values()) == 0:
            break
        alive = {n: alive[n] - remove[n] for n in names}
        schedule.append(sum(alive.values()) / total)
    return schedule


@dataclass(frozen=True)
class IMPPlan:
    """What an IMP run will do, known before any training (:func:`plan_imp`).

    ``densities``: the overall density of every round (round 0 = 1.0, dense);
    ``rates``: the per-layer pruning rate of each round; ``rewind_step``: the step whose
    weights survivors are reset to (0 = θ0), checked against ``total_steps``."""

    densities: list[float]
    rates: dict[str, float]
    rewind_step: int
    total_steps: int

    @property
    def rounds(self) -> int:
        """Number of pruning rounds (``len(densities) - 1``)."""
        return len(self.densities) - 1


def plan_imp(shapes: Mapping[str, torch.Size], cfg: IMPConfig, total_steps: int) -> IMPPlan:
    """Plan an IMP run over the prunable layers ``shapes`` whose every round trains for
    ``total_steps`` steps: the density schedule (:func:`density_schedule`), the per-layer
    rates (:func:`~weightlab.sparsity.allocation.layer_rates`) and the rewind step, which
    must lie in ``0..total_steps`` (Frankle et al. 2020 rewind to an iteration of the same
    run). Raises a one-line :class:`ConfigError` otherwise, before anything trains."""
    if isinstance(total_steps, bool) or int(total_steps) != total_steps or total_steps < 1:
        raise ConfigError(f"total_steps must be a positive integer, got {total_steps!r}")
    k = cfg.rewind_step
    if k > total_steps:
        raise ConfigError(
            f"rewind step {k} is past the end of training ({total_steps} steps per round); "
            f"choose a rewind step in 0..{total_steps}"
        )
    return IMPPlan(
        densities=density_schedule(shapes, cfg),
        rates=layer_rates(list(shapes), cfg.rate, cfg.rate_overrides),
        rewind_step=k,
        total_steps=int(total_steps),
    )


@dataclass
class IMPRound:
    """One IMP round: ``round`` 0 is the dense network; ``masks`` are bool CPU tensors
    (all True in round 0), ``density`` their overall density, ``result`` the training run
    from the rewound weights ``m ⊙ θ0`` (or ``m ⊙ θk``)."""

    round: int
    density: float
    masks: dict[str, torch.Tensor]
    result: TrainResult


def iterative_magnitude_pruning(
    factory: Callable[[int], nn.Module],
    data: TaskData,
    train_cfg: TrainConfig,
    imp_cfg: IMPConfig,
    seed: int,
    selector: Selector | None = None,
    train_fn: Callable[..., TrainResult] = train,
    progress: bool = False,
) -> list[IMPRound]:
    """Sequential reference IMP on one model (Frankle & Carbin 2019, Sec. 2; rewinding
    from Frankle et al. 2020).

    Round 0 trains ``factory(seed)`` densely (keeping θk if ``imp_cfg.rewind`` is a step
    ``k``). Each later round prunes the last round's trained weights with
    :func:`imp_step`, resets the survivors to θ0 (or θk) with
    :func:`~weightlab.core.restore_snapshot` + :func:`~weightlab.core.apply_masks`, and
    retrains with a fresh optimizer and the same data order (``data_seed = seed``).
    Every round trains for the full ``train_cfg`` budget (also when rewinding to ``k``,
    where Frankle et al. 2020 train the remaining ``T - k`` steps). The rounds follow
    :func:`density_schedule`. Only parameters picked by ``selector`` (default: all
    Linear/Conv weights) are pruned.
    """
    selector = selector or Selector()
    device = data.device
    model = factory(seed).to(device)
    picked = selector(model)
    if not picked:
        raise ConfigError("the selector picked no parameters to prune; check its types and roles")
    shapes = {n: getattr(m, a).shape for n, (m, a) in picked.items()}
    total_steps = steps_per_epoch(len(data.train), train_cfg.batch_size) * train_cfg.epochs
    plan = plan_imp(shapes, imp_cfg, total_steps)
    schedule, rates, k = plan.densities, plan.rates, plan.rewind_step
    theta0 = take_snapshot(model)
    result = train_fn(
        model, data, train_cfg, seed, snapshot_steps=(k,) if k else (), progress=progress
    )
    rewind_to = result.snapshots[k] if k else theta0
    masks = {n: torch.ones(s, dtype=torch.bool) for n, s in shapes.items()}
    rounds = [IMPRound(0, 1.0, masks, result)]
    for r in range(1, len(schedule)):
        trained = weights_of(model, selector)
        masks = {n: m.cpu() for n, m in imp_step(trained, masks, rates, imp_cfg.scope).items()}
        restore_snapshot(model, rewind_to)
        apply_masks(model, masks)
        result = train_fn(model, data, train_cfg, seed, snapshot_steps=(), progress=progress)
        rounds.append(IMPRound(r, density(masks), masks, result))
    return rounds


__all__ = [
    "IMPConfig",
    "IMPPlan",
    "IMPRound",
    "density_schedule",
    "imp_step",
    "iterative_magnitude_pruning",
    "plan_imp",
]
