"""Random masks with exact layer-wise counts: the random-mask control arm.

Frankle & Carbin (2019), "The Lottery Ticket Hypothesis", Sec. 2 compare winning tickets
with sparse networks of the same layer-wise sparsity but randomly chosen connections;
:func:`random_masks` draws such a mask from an explicit generator. Give either layer-wise
``densities`` (counts via :func:`~weightlab.sparsity.allocation.keep_counts`) or exact
``keep`` counts (e.g. ``mask_counts(ticket)`` to match a ticket).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from weightlab.errors import ConfigError
from weightlab.sparsity.allocation import keep_counts


def random_masks(
    shapes: Mapping[str, torch.Size],
    densities: Mapping[str, float] | None = None,
    keep: Mapping[str, int] | None = None,
    *,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Bool masks keeping a uniformly random subset of exactly ``keep[name]`` weights per
    layer (or ``round-half-up(densities[name] · N)``), drawn on the CPU from ``generator``
    layer by layer in the order of ``shapes``."""
    if (densities is None) == (keep is None):
        raise ConfigError("random_masks needs exactly one of densities= or keep=")
    if not isinstance(generator, torch.Generator):
        raise ConfigError(
            "random_masks needs a torch.Generator; build one with weightlab.seeding.generator(seed)"
        )
    counts = keep_counts(shapes, densities) if densities is not None else dict(keep)
    out = {}
    for name, shape in shapes.items():
        if name not in counts:
            raise ConfigError(f"no keep count for {name!r}; give one for every layer")
        n = math.prod(shape)
        k = int(counts[name])
        if not 0 <= k <= n:
            raise ConfigError(f"cannot keep {k} of the {n} weights of {name!r}; ask for 0..{n}")
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=generator)[:k]] = True
        out[name] = mask.view(torch.Size(shape))
    return out


__all__ = ["random_masks"]
