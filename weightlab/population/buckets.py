"""Populations whose members have different architectures, e.g. a width sweep.

A width sweep 40-w-w-10, ``w ∈ {64, ..., 1024}``, as one population::

    factories = {w: model_factory(MLP, [40, w, w, 10]) for w in (64, 128, 256, 512, 1024)}
    members = [(w, MemberSpec(seed=s)) for w in factories for s in range(12)]
    pop = Population.sweep(factories, members)        # a BucketedPopulation
    results = pop.fit(data, cfg)                      # results[i] belongs to members[i]

Members are grouped into one bucket per factory key; each bucket is an ordinary
:class:`~weightlab.population.Population` (its own engine: MLP fast path, ``vmap`` or
sequential), and buckets train one after another, each within the full memory budget.
Nothing is padded: a bucket stacks only members of identical shapes, so every executed
FLOP is a useful one and the padding FLOPs are zero by construction (padding a 64…1024
sweep to the widest member would execute ~3.7× the useful work, i.e. waste ~73%).
:meth:`BucketedPopulation.useful_flops` gives each bucket's matmul FLOPs per member-step
(forward, input-gradient except in the first layer, weight-gradient) for benchmarks.

Each member equals the same member trained alone (``weightlab.train.train`` on
``factory[key](spec.seed)``), since a bucket is a population and populations reproduce the
single-model loop member by member; results come back in the order of ``members``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.population.population import Population
from weightlab.population.spec import MemberSpec
from weightlab.train.config import TrainConfig
from weightlab.train.loop import TrainResult
from weightlab.train.probes import Probe

ModelFactory = Callable[[int], nn.Module]


def useful_matmul_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Matmul FLOPs one training step of ``model`` executes on the batch ``x``.

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` over a forward pass and a
    backward pass to the parameters only (``x`` does not require a gradient, so the first
    layer computes no input-gradient): forward, input-gradient and weight-gradient
    matrix products and convolutions, ``2·m·n·k`` per ``(m×k)·(k×n)`` product. Elementwise
    work (activations, loss, optimizer) is not counted. For an MLP with widths
    ``n_0..n_L`` and batch ``B`` this is ``Σ_l 2·B·n_{l-1}·n_l·(3 if l > 1 else 2)``.
    The model's parameters get gradients written (``.grad``); pass a throwaway copy.
    """
    was = model.training
    model.train()
    try:
        with FlopCounterMode(display=False) as counter:
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            out.float().sum().backward()
    finally:
        model.train(was)
        model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class Bucket:
    """Members of one architecture: ``members[j]`` (index into the sweep's member list) is
    member ``j`` of ``population``."""

    key: Hashable
    members: tuple[int, ...]
    population: Population


class BucketedPopulation:
    """Members built by different factories (e.g. different widths), trained as one
    population of per-architecture buckets (module docstring).

    Args:
        factories: key -> ``seed -> nn.Module``; one bucket per key that has members.
        members: ``(key, MemberSpec)`` per member; results follow this order.
        device, data_seed, memory_budget_mib, **population_kwargs: passed to every
            bucket's :class:`Population`. Buckets train one after another, each within the
            full ``memory_budget_mib``.
    """

    def __init__(
        self,
        factories: Mapping[Hashable, ModelFactory],
        members: Sequence[tuple[Hashable, MemberSpec]],
        device: torch.device | str = "cpu",
        data_seed: int = 0,
        memory_budget_mib: float = 2048,
        **population_kwargs,
    ) -> None:
        if not isinstance(factories, Mapping) or not factories:
            raise ConfigError("a sweep needs factories: a dict of key -> factory(seed)")
        members = list(members)
        if not members:
            raise ConfigError("a sweep needs at least one member; pass [(key, MemberSpec), ...]")
        groups: dict[Hashable, list[int]] = {}
        for i, m in enumerate(members):
            if not (isinstance(m, tuple) and len(m) == 2 and isinstance(m[1], MemberSpec)):
                raise ConfigError(f"sweep member {i} must be a (key, MemberSpec) pair, got {m!r}")
            if m[0] not in factories:
                known = ", ".join(map(repr, factories))
                raise ConfigError(f"sweep member {i} has unknown key {m[0]!r}; known keys: {known}")
            groups.setdefault(m[0], []).append(i)
        self.keys = [k for k, _ in members]
        self.specs = [s for _, s in members]
        self.buckets = [
            Bucket(
                key,
                tuple(groups[key]),
                Population(
                    factories[key],
                    [self.specs[i] for i in groups[key]],
                    device,
                    data_seed,
                    memory_budget_mib,
                    **population_kwargs,
                ),
            )
            for key in factories
            if key in groups
        ]
        self._where = {i: (b, j) for b in self.buckets for j, i in enumerate(b.members)}

    def __len__(self) -> int:
        return len(self.specs)

    def key(self, i: int) -> Hashable:
        """The factory key of member ``i``."""
        return self.keys[self._index(i)]

    def _index(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise ConfigError(f"member index {i} out of range for a sweep of {len(self)}")
        return i % len(self)

    def fit(
        self,
        data: TaskData,
        cfg: TrainConfig,
        snapshot_steps: Sequence[int] = (),
        progress: bool = False,
        probes: Sequence[Probe] = (),
        orders: Mapping[int, torch.Tensor] | None = None,
    ) -> list[TrainResult]:
        """Train every bucket (:meth:`Population.fit`, same arguments); ``results[i]``
        belongs to member ``i``. Every bucket is checked before any trains, so a
        :class:`ConfigError` in one bucket (e.g. a parameter group matching none of its
        parameters) leaves all members untouched."""
        plans = [
            b.population._plan(data, cfg, snapshot_steps, probes, orders) for b in self.buckets
        ]
        results: list[TrainResult | None] = [None] * len(self)
        for b, plan in zip(self.buckets, plans, strict=True):
            got = b.population._train(plan, progress)
            for i, r in zip(b.members, got, strict=True):
                results[i] = r
        return results  # type: ignore[return-value]

    def evaluate(self, split: Split, loss: object = "auto") -> tuple[torch.Tensor, ...]:
        """:meth:`Population.evaluate` of every bucket (per-member mean loss, and accuracy or
        R²), each returned tensor in member order."""
        out: list[torch.Tensor] | None = None
        for b in self.buckets:
            got = b.population.evaluate(split, loss)
            if out is None:
                out = [torch.empty(len(self), dtype=t.dtype) for t in got]
            idx = torch.tensor(b.members)
            for full, part in zip(out, got, strict=True):
                full[idx] = part.cpu()
        return tuple(out)  # type: ignore[arg-type]

    def state(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s weights and buffers (its bucket's :meth:`Population.state`)."""
        b, j = self._where[self._index(i)]
        return b.population.state(j)

    def member(self, i: int) -> nn.Module:
        """Member ``i`` as an ordinary module (its bucket's :meth:`Population.member`)."""
        b, j = self._where[self._index(i)]
        return b.population.member(j)

    def useful_flops(self, x: torch.Tensor, batch: int) -> dict[Hashable, int]:
        """Per bucket key: matmul FLOPs of one member-step on a batch of ``batch`` inputs
        shaped like ``x``'s rows (:func:`useful_matmul_flops` on a fresh member of the
        bucket). No padding is executed, so these are also the executed FLOPs."""
        if batch <= 0 or len(x) == 0:
            raise ConfigError("useful_flops needs batch > 0 and at least one input row")
        rows = x[torch.arange(batch) % len(x)].cpu()
        out = {}
        for b in self.buckets:
            pop = b.population
            out[b.key] = useful_matmul_flops(pop.factory(pop.specs[0].seed), rows)
        return out

    def useful_flops_per_step(self, x: torch.Tensor, batch: int) -> int:
        """Matmul FLOPs of one training step of every member together."""
        per = self.useful_flops(x, batch)
        return sum(per[b.key] * len(b.members) for b in self.buckets)
