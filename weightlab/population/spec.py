"""A population member's specification: init seed, data order, optimizer, mask, start state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from weightlab.train.config import OptimConfig


@dataclass
class MemberSpec:
    """One member of a :class:`~weightlab.population.Population`.

    Args:
        seed: init seed passed to the model factory (``factory(seed)``).
        data_seed: data-order seed; ``None`` uses the population's shared ``data_seed``.
        optim: optimizer settings; ``None`` uses ``cfg.optim`` of :meth:`Population.fit`.
            Members may differ in any field (optimizer, lr, schedule, groups, clipping).
        masks: plain parameter name (``"layers.0.weight"``) -> 0/1 mask of the same shape.
            Pruned weights are stored as exact zeros and get zero gradient, as with
            :func:`weightlab.core.apply_masks` (Frankle & Carbin 2019, Section 2, Eq. ``f(x; m ⊙ θ)``).
        init_state: a plain-name snapshot (:func:`weightlab.core.take_snapshot` format) to
            start from instead of ``factory(seed)``'s weights, e.g. the rewound θ0 of a
            lottery ticket; ``masks`` are applied on top.
    """

    seed: int = 0
    data_seed: int | None = None
    optim: OptimConfig | None = None
    masks: dict[str, torch.Tensor] | None = None
    init_state: dict[str, torch.Tensor] | None = None


def build_member(
    factory: Callable[[int], nn.Module], spec: MemberSpec, device: torch.device | str = "cpu"
) -> nn.Module:
    """Member ``spec`` as an ordinary module, as the single-model loop trains it:
    ``factory(spec.seed)``, then ``spec.init_state`` restored (if any), moved to ``device``,
    then ``spec.masks`` attached with :func:`weightlab.core.apply_masks`."""
    from weightlab.core.mask import apply_masks
    from weightlab.core.snapshots import restore_snapshot

    model = factory(spec.seed)
    if spec.init_state is not None:
        restore_snapshot(model, spec.init_state)
    model = model.to(device)
    if spec.masks:
        apply_masks(model, spec.masks)
    return model
