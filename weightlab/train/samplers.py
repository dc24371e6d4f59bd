"""Data samplers: explicit ``(steps, batch)`` index tensors for the one loop and populations.

:func:`weightlab.train.train` and :meth:`weightlab.population.Population.fit` draw their
batches with :func:`weightlab.train.order.batch_indices` (one seeded permutation of the
whole training split per epoch). A sampler instead supplies the whole run's order as a
``(T, B)`` tensor of training-example indices, passed as ``train(..., order=...)`` or
``Population.fit(..., orders={data_seed: ...})``:

- :func:`rs2_order`: Repeated Sampling of Random Subsets (RS2) without replacement
  (Okanovic et al. 2023, "Repeated Random Sampling for Minimizing the Time-to-Accuracy of
  Learning", Sec. 3, Alg. 1): every round (the paper's "epoch") trains on a fresh random
  subset of ``fraction · n`` examples; the subsets are consecutive chunks of a stream of
  seeded permutations, so every example is seen once before any is seen again.
- :func:`static_subset_order`: a fixed subset (a random one, or one kept by a data score,
  :func:`weightlab.probes.data_scores.prune_by_score`) reshuffled every epoch: static data
  pruning.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from weightlab.errors import ConfigError
from weightlab.seeding import generator

__all__ = ["check_order", "rs2_order", "rs2_subset_size", "static_subset_order"]


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _steps(steps: int | None, per_round: int, rounds: int) -> int:
    if steps is None:
        return per_round * rounds
    return _positive_int(steps, "steps")


def rs2_subset_size(n: int, fraction: float, batch_size: int) -> int:
    """Examples per RS2 round: ``fraction · n`` rounded down to whole batches (at least one
    batch), so every drawn example is trained on and none is dropped within a round."""
    n = _positive_int(n, "n")
    batch_size = _positive_int(batch_size, "batch_size")
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
        raise ConfigError(f"fraction must be a number in (0, 1], got {fraction!r}")
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must lie in (0, 1], got {fraction}")
    if batch_size > n:
        raise ConfigError(f"batch size {batch_size} is larger than the training split ({n})")
    per_round = math.floor(fraction * n + 1e-9) // batch_size
    if per_round < 1:
        raise ConfigError(
            f"fraction {fraction} of {n} examples is less than one batch of {batch_size}; "
            "raise the fraction or lower the batch size"
        )
    return per_round * batch_size


def rs2_order(
    n: int,
    fraction: float,
    batch_size: int,
    epochs: int,
    seed: int,
    *,
    steps: int | None = None,
) -> torch.Tensor:
    """RS2 without replacement (Okanovic et al. 2023, Alg. 1, ``replace=False``) as a
    ``(T, batch_size)`` CPU index tensor.

    The examples form a stream of permutations of ``range(n)`` drawn one after another from
    ``generator(seed)``; round ``r`` trains on stream positions ``[r·m, (r+1)·m)`` with
    ``m =`` :func:`rs2_subset_size` (``fraction · n`` in whole batches), in that (already
    random) order, ``m / batch_size`` steps per round. So the first ``n`` examples drawn are
    all distinct (every example once before any repeats), and so is every later block of
    ``n`` stream positions. A round that straddles two permutations may, rarely, hold one
    example twice (the paper's sampler reshuffles at the same point).

    Args:
        n: training examples.
        fraction: the per-round subset fraction ``f`` (the paper's selection ratio).
        batch_size: examples per step.
        epochs: RS2 rounds (``T = epochs · m / batch_size`` steps).
        seed: seeds the permutations.
        steps: the exact number of steps ``T`` instead (e.g. a full-data run's step count,
            for equal total steps); the stream simply continues.
    """
    m = rs2_subset_size(n, fraction, batch_size)
    per_round = m // batch_size
    total = _steps(steps, per_round, _positive_int(epochs, "epochs"))
    need = total * batch_size
    g = generator(seed)
    perms = [torch.randperm(n, generator=g) for _ in range(math.ceil(need / n))]
    return torch.cat(perms)[:need].view(total, batch_size)


def static_subset_order(
    indices: torch.Tensor | Sequence[int],
    batch_size: int,
    epochs: int,
    seed: int,
    *,
    steps: int | None = None,
) -> torch.Tensor:
    """Static data pruning as a ``(T, batch_size)`` CPU index tensor: training on the fixed
    subset ``indices`` (indices into the training split), one seeded permutation of the
    subset per epoch, the last partial batch dropped (as :func:`batch_indices` does for the
    whole split). ``steps`` gives the exact step count ``T`` (more epochs as needed)
    instead of ``epochs · (len(indices) // batch_size)``."""
    idx = torch.as_tensor(indices)
    if idx.ndim != 1 or idx.is_floating_point() or idx.dtype == torch.bool:
        raise ConfigError("indices must be a 1-D integer tensor of training-example indices")
    idx = idx.to(torch.long).cpu()
    if len(set(idx.tolist())) != len(idx):
        raise ConfigError("indices lists an example twice; pass each kept example once")
    batch_size = _positive_int(batch_size, "batch_size")
    if batch_size > len(idx):
        raise ConfigError(
            f"batch size {batch_size} is larger than the subset ({len(idx)} examples)"
        )
    spe = len(idx) // batch_size
    total = _steps(steps, spe, _positive_int(epochs, "epochs"))
    g = generator(seed)
    perms = [
        idx[torch.randperm(len(idx), generator=g)[: spe * batch_size]]
        for _ in range(math.ceil(total / spe))
    ]
    return torch.cat(perms)[: total * batch_size].view(total, batch_size)


def check_order(order: object, n: int, batch_size: int) -> torch.Tensor:
    """An explicit data order for ``train`` / ``Population.fit``, checked: a 2-D integer
    ``(T, batch_size)`` tensor, ``T >= 1``, every index in ``[0, n)``. Returns it as a
    ``long`` tensor; raises a one-line :class:`ConfigError` otherwise."""
    if not isinstance(order, torch.Tensor):
        raise ConfigError(
            f"order must be a (steps, batch) tensor of example indices, got {type(order).__name__}"
        )
    if order.ndim != 2 or order.is_floating_point() or order.dtype == torch.bool:
        raise ConfigError(
            f"order must be a 2-D integer (steps, batch) tensor, got {order.ndim}-D {order.dtype}"
        )
    if order.shape[0] < 1:
        raise ConfigError("order has no steps; pass at least one batch")
    if order.shape[1] != batch_size:
        raise ConfigError(
            f"order has batches of {order.shape[1]} examples but the config's batch size is "
            f"{batch_size}; make them equal"
        )
    lo, hi = int(order.min()), int(order.max())
    if lo < 0 or hi >= n:
        raise ConfigError(
            f"order indexes example {lo if lo < 0 else hi}, outside the training split (0..{n - 1})"
        )
    return order.long()
