"""Train a list of member specs, as one population or as a plain sequential loop.

``engine="population"`` uses :class:`weightlab.population.Population` (all members as
one vectorized computation); ``engine="loop"`` trains each member in turn with the
single-model loop :func:`weightlab.train.train`, the plain-PyTorch baseline. Both give
the same numbers to float tolerance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import torch
from torch import nn

from weightlab.core.snapshots import take_snapshot
from weightlab.data.task import TaskData
from weightlab.errors import ConfigError
from weightlab.population.spec import build_member
from weightlab.train.callbacks import StepCallback
from weightlab.train.config import TrainConfig
from weightlab.train.loop import TrainResult, train

ENGINES = ("population", "loop")

# Set by weightlab.sweep.batching while a sweep's batch group runs: population calls of the
# group's runs are parked there and trained together.
_batcher = None


def train_members(
    factory: Callable[[int], nn.Module],
    specs: Sequence,
    data: TaskData,
    cfg: TrainConfig,
    *,
    engine: str = "population",
    device: str | torch.device = "cpu",
    data_seed: int = 0,
    snapshot_steps: Sequence[int] = (),
    callbacks: Callable[[int], Sequence[StepCallback]] | None = None,
    progress: bool = False,
    orders: Mapping[int, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[list[TrainResult], list[dict[str, torch.Tensor]]]:
    """Train every spec; return each member's :class:`TrainResult` and final weights (plain names, CPU).

    ``callbacks(i)`` gives member ``i``'s step callbacks (fresh objects per member: they
    may keep state); step callbacks run only in the loop engine. ``orders``: explicit
    data orders keyed by data seed (a sampler's, :mod:`weightlab.train.samplers`), as
    :meth:`Population.fit` takes them; both engines train member ``i`` on the order of its
    data seed. ``dtype``: train in this floating dtype (``torch.float64`` for exact
    dynamics); ``None`` keeps each engine's default (float32 populations, the model's own
    dtype in the loop)."""
    if callbacks is not None and engine != "loop":
        raise ConfigError(
            "step callbacks (pruning schedules, dynamic sparsity) run in the loop engine only; "
            "pass engine='loop'"
        )
    kw = dict(
        device=device,
        data_seed=data_seed,
        snapshot_steps=tuple(snapshot_steps),
        progress=progress,
        orders=orders,
        dtype=dtype,
    )
    if engine == "population" and _batcher is not None:
        return _batcher.park(factory, specs, data, cfg, **kw)
    return train_members_now(factory, specs, data, cfg, engine=engine, callbacks=callbacks, **kw)


def train_members_now(
    factory: Callable[[int], nn.Module],
    specs: Sequence,
    data: TaskData,
    cfg: TrainConfig,
    *,
    engine: str = "population",
    device: str | torch.device = "cpu",
    data_seed: int = 0,
    snapshot_steps: Sequence[int] = (),
    callbacks: Callable[[int], Sequence[StepCallback]] | None = None,
    progress: bool = False,
    orders: Mapping[int, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[list[TrainResult], list[dict[str, torch.Tensor]]]:
    """:func:`train_members` itself, never parked by a sweep's batch group."""
    if engine == "population":
        from weightlab.population import Population

        kw = {} if dtype is None else {"dtype": dtype}
        pop = Population(factory, list(specs), device=device, data_seed=data_seed, **kw)
        results = pop.fit(
            data, cfg, snapshot_steps=snapshot_steps, progress=progress, orders=orders
        )
        finals = [pop.state(i) for i in range(len(specs))]
        return results, finals
    results, finals = [], []
    for i, spec in enumerate(specs):
        model = build_member(factory, spec, device)
        member_cfg = cfg if spec.optim is None else replace(cfg, optim=spec.optim)
        order_seed = spec.data_seed if spec.data_seed is not None else data_seed
        order = None
        if orders is not None:
            if order_seed not in orders:
                raise ConfigError(
                    f"orders has no data order for data seed {order_seed}; pass one per "
                    "member data seed"
                )
            order = orders[order_seed]
        results.append(
            train(
                model,
                data,
                member_cfg,
                order_seed,
                seed=spec.seed,
                snapshot_steps=snapshot_steps,
                callbacks=callbacks(i) if callbacks is not None else (),
                progress=progress,
                order=order,
                dtype=dtype,
            )
        )
        finals.append(take_snapshot(model))
    return results, finals


def accuracy_record(result: TrainResult) -> dict:
    """The fields a classification recipe keeps per member: divergence, test accuracy at
    the early-stopping evaluation (minimum validation loss) and at the end, and the two
    steps (an early stop in the last stretch means the member was still improving)."""
    return {
        "diverged": bool(result.diverged),
        "test_acc": result.best.test_acc,
        "final_test_acc": result.final.test_acc,
        "early_stop_step": result.best.step,
        "last_step": result.final.step,
    }
