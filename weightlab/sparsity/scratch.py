"""Training a pruned architecture from scratch: Liu et al. (2019), "Rethinking the Value
of Network Pruning" (ICLR 2019), Sec. 3 ("Scratch-E" and "Scratch-B").

- **Scratch-E**: the small model trains for the same number of epochs as the large one.
- **Scratch-B**: the same computation budget, i.e. training FLOPs: ``epochs × F_large /
  F_small`` epochs with ``F`` the forward FLOPs per example (training FLOPs are a fixed
  multiple of them for the same architecture family), rounded to the nearest epoch.
  Uncapped here (the paper caps ImageNet at 2×): 60 epochs of 40-512-512-10 pruned 75%
  to 40-128-128-10 become 758 epochs (ratio 12.63).

The small model is built fresh from its architecture (:func:`architecture_factory`),
with new random weights: only the pruned architecture is kept, not the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.models.convnets import ResidualCNN, SmallCNN
from weightlab.models.factory import ModelFactory, model_factory
from weightlab.models.mlp import MLP
from weightlab.sparsity.structured import count_flops

BUDGETS = ("E", "B")


@dataclass(frozen=True)
class ScratchBudget:
    """``kind`` ``"E"`` or ``"B"``; ``epochs`` the small model trains; ``flop_ratio`` the
    large model's forward FLOPs per example over the small one's."""

    kind: str
    epochs: int
    flop_ratio: float


def mlp_forward_flops(widths: Sequence[int]) -> int:
    """Forward FLOPs per example of an MLP with ``widths``: ``2 · Σ_l w_l · w_{l+1}`` (one
    multiply and one add per weight; biases and activations not counted), the count
    :class:`torch.utils.flop_counter.FlopCounterMode` gives (tested). Cheap: no
    FlopCounterMode import (it loads torch._dynamo, seconds on a cold process)."""
    w = [int(v) for v in widths]
    return 2 * sum(a * b for a, b in zip(w[:-1], w[1:], strict=False))


def flop_ratio(large: nn.Module, small: nn.Module, example: torch.Tensor) -> float:
    """Forward FLOPs of ``large`` over ``small`` at ``example``
    (:func:`~weightlab.sparsity.structured.count_flops`)."""
    return count_flops(large, example) / count_flops(small, example)


def scratch_budget(kind: str, large_epochs: int, ratio: float = 1.0) -> ScratchBudget:
    """The epochs of Scratch-E (``large_epochs``) or Scratch-B
    (``round(large_epochs · ratio)``, ``ratio`` = large / small forward FLOPs)."""
    if kind not in BUDGETS:
        raise ConfigError(f"unknown scratch budget {kind!r}; use 'E' or 'B'")
    if int(large_epochs) != large_epochs or large_epochs < 1:
        raise ConfigError(f"large_epochs must be a positive integer, got {large_epochs!r}")
    if not ratio > 0:
        raise ConfigError(f"the FLOP ratio must be positive, got {ratio!r}")
    epochs = int(large_epochs) if kind == "E" else max(1, int(large_epochs * ratio + 0.5))
    return ScratchBudget(kind, epochs, float(ratio))


def architecture_factory(model: nn.Module, init: str = "kaiming_uniform") -> ModelFactory:
    """A ``seed -> fresh module`` factory with ``model``'s architecture (widths), for
    weightlab's MLP, SmallCNN and ResidualCNN (pruned or not)."""
    if isinstance(model, MLP):
        return model_factory(MLP, list(model.widths), activation=model.activation, init=init)
    if isinstance(model, SmallCNN):
        return model_factory(
            SmallCNN, model.in_channels, list(model.channels), model.num_classes, init=init
        )
    if isinstance(model, ResidualCNN):
        return model_factory(
            ResidualCNN,
            model.in_channels,
            model.width,
            len(model.blocks),
            model.num_classes,
            list(model.inner),
            init=init,
        )
    raise ConfigError(
        f"no architecture factory for {type(model).__name__}; pass a model factory instead"
    )


def train_from_scratch(
    arch: ModelFactory | nn.Module,
    budget: ScratchBudget,
    data,
    cfg,
    specs: Sequence,
    *,
    engine: str = "population",
    device: str | torch.device = "cpu",
    progress: bool = False,
):
    """Train ``arch`` (a factory, or a model whose architecture is rebuilt with
    :func:`architecture_factory`) from fresh random weights for ``budget.epochs`` with
    otherwise the large model's training config ``cfg``, one member per spec
    (:class:`~weightlab.population.MemberSpec`); returns ``train_members``' results and
    final weights."""
    from weightlab.recipes.members import train_members

    factory = arch if not isinstance(arch, nn.Module) else architecture_factory(arch)
    for s in specs:
        if s.init_state is not None or s.masks:
            raise ConfigError(
                "training from scratch takes fresh weights: drop init_state and masks"
            )
    return train_members(
        factory,
        specs,
        data,
        replace(cfg, epochs=budget.epochs),
        engine=engine,
        device=device,
        progress=progress,
    )


__all__ = [
    "BUDGETS",
    "ScratchBudget",
    "architecture_factory",
    "flop_ratio",
    "mlp_forward_flops",
    "scratch_budget",
    "train_from_scratch",
]
