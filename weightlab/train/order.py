"""Seeded data order: which examples each step sees."""

from __future__ import annotations

import torch

from weightlab.errors import ConfigError
from weightlab.seeding import generator


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped)."""
    if n < batch_size:
        raise ConfigError(
            f"batch size {batch_size} is larger than the training split ({n} examples)"
        )
    return n // batch_size


def batch_indices(n: int, batch_size: int, epochs: int, data_seed: int) -> torch.Tensor:
    """All batches of a run as one ``(epochs * steps_per_epoch, batch_size)`` CPU index tensor.

    Epoch ``e`` uses the ``e``-th permutation drawn from ``generator(data_seed)``.
    """
    spe = steps_per_epoch(n, batch_size)
    g = generator(data_seed)
    perms = [torch.randperm(n, generator=g)[: spe * batch_size] for _ in range(epochs)]
    return torch.cat(perms).view(epochs * spe, batch_size)
