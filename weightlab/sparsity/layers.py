"""Layer pruning of residual networks: score blocks at initialization, remove the lowest.

Jordao et al. (2023), "When Layers Play the Lottery, all Tickets Win at Initialization"
(row [#22]) find winning tickets by *removing layers* (residual blocks) before training.
The abstract does not name the block criterion; weightlab scores a block with SNIP
(Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection Sensitivity",
Eq. 3, the unnormalized connection sensitivity ``|w ⊙ ∂L/∂w|``) summed over the block's
weights, on one batch at initialization:

    S(block b) = Σ_{w ∈ weights of b} |w · ∂L/∂w|

and removes the ``n`` lowest-scoring blocks. Random removal (:func:`random_blocks`) is
the control. Because every block has an identity skip, removing a block equals skipping
it (:func:`remove_blocks` gives a plain smaller model; tested to 1e-6).

The FLOP-matched structured control (:func:`unit_masks`) removes block-internal units
(``fc1`` rows, ``fc1`` bias entries, ``fc2`` columns) by the L1 norm of their ``fc1`` row
(Li et al. 2017, "Pruning Filters for Efficient ConvNets", Sec. 3.1, Σ|F|), keeping
``⌊n·(1 - r)⌋`` per block as Torch-Pruning does.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from weightlab.core.selectors import Selector
from weightlab.errors import ConfigError

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _num_blocks(model: nn.Module) -> int:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ConfigError(
            f"{type(model).__name__} has no 'blocks' ModuleList; layer pruning needs a residual "
            "model like weightlab.models.resmlp.ResMLP"
        )
    return len(blocks)


def block_scores(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    *,
    loss: Callable[[nn.Module, Any], torch.Tensor] | None = None,
) -> list[float]:
    """Per block ``i`` of ``model.blocks``: ``Σ |w ⊙ ∂L/∂w|`` over the block's weights
    (SNIP, Lee et al. 2019, Eq. 3, from :func:`weightlab.sparsity.saliency.snip_scores`)
    on ``batch = (x, y)``; ``loss(model, batch) -> scalar`` defaults to mean
    cross-entropy there."""
    from weightlab.sparsity.saliency import snip_scores

    n = _num_blocks(model)
    if n == 0:
        raise ConfigError("the model has no blocks to score")
    scores = snip_scores(model, batch, loss=loss, selector=Selector(include=("blocks.*",)))
    totals = [0.0] * n
    for name, s in scores.items():
        m = _BLOCK.match(name)
        if m is None:
            continue
        totals[int(m.group(1))] += float(s.double().sum())
    return totals


def lowest_blocks(scores: Sequence[float], n: int) -> list[int]:
    """Indices of the ``n`` lowest scores, ascending by index (ties: the earlier block)."""
    if not 0 <= n < len(scores):
        raise ConfigError(
            f"cannot remove {n} of {len(scores)} blocks; choose 0..{len(scores) - 1} "
            "(at least one block must stay)"
        )
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    return sorted(order[:n])


def random_blocks(num_blocks: int, n: int, generator: torch.Generator) -> list[int]:
    """``n`` of ``num_blocks`` block indices drawn uniformly without replacement (sorted):
    the random-removal control."""
    if not 0 <= n < num_blocks:
        raise ConfigError(f"cannot remove {n} of {num_blocks} blocks; choose 0..{num_blocks - 1}")
    return sorted(int(i) for i in torch.randperm(num_blocks, generator=generator)[:n])


def remove_blocks_state(
    state: dict[str, torch.Tensor], removed: Sequence[int], num_blocks: int
) -> dict[str, torch.Tensor]:
    """A plain-name state of a model with ``num_blocks`` blocks, minus the ``removed``
    blocks' entries, the survivors renumbered ``0..num_blocks - len(removed) - 1`` in
    order: the state dict of the smaller model."""
    drop = set(int(i) for i in removed)
    if any(not 0 <= i < num_blocks for i in drop):
        raise ConfigError(f"block indices {sorted(drop)} out of range 0..{num_blocks - 1}")
    keep = [i for i in range(num_blocks) if i not in drop]
    new_index = {old: new for new, old in enumerate(keep)}
    out = {}
    for name, t in state.items():
        m = _BLOCK.match(name)
        if m is None:
            out[name] = t
        elif int(m.group(1)) not in drop:
            out[f"blocks.{new_index[int(m.group(1))]}.{m.group(2)}"] = t
    return out


def remove_blocks(model: nn.Module, removed: Sequence[int]) -> nn.Module:
    """A copy of ``model`` without the blocks ``removed`` (a plain, smaller module with
    fewer parameters and FLOPs); its output equals ``model`` skipping those blocks."""
    n = _num_blocks(model)
    drop = set(int(i) for i in removed)
    if any(not 0 <= i < n for i in drop):
        raise ConfigError(f"block indices {sorted(drop)} out of range 0..{n - 1}")
    small = copy.deepcopy(model)
    small.blocks = nn.ModuleList(b for i, b in enumerate(small.blocks) if i not in drop)
    return small


def unit_masks(
    state: dict[str, torch.Tensor], num_blocks: int, ratio: float
) -> dict[str, torch.Tensor]:
    """Masks removing ``ratio`` of every block's internal units by the L1 norm of their
    ``fc1`` row in ``state`` (Li et al. 2017, Sec. 3.1), keeping ``⌊n·(1 - ratio)⌋`` per
    block (ties: the lower index stays). A removed unit loses its ``fc1`` row and bias
    entry and its ``fc2`` column, so a block keeping ``k`` of ``n`` units costs ``k/n`` of
    its FLOPs. Returns ``{plain_name: bool tensor}`` for ``blocks.i.fc1.weight``,
    ``blocks.i.fc1.bias``, ``blocks.i.fc2.weight``."""
    if not 0 <= ratio < 1:
        raise ConfigError(f"unit pruning ratio must lie in [0, 1); got {ratio}")
    masks = {}
    for b in range(num_blocks):
        w1 = state[f"blocks.{b}.fc1.weight"]
        n = w1.shape[0]
        k = math.floor(n * (1 - ratio) + 1e-9)  # guard float error, e.g. 300·(1 - 0.8)
        if k == 0:
            raise ConfigError(
                f"pruning {ratio:.0%} of block {b}'s {n} units keeps none; lower the ratio"
            )
        l1 = w1.detach().abs().double().sum(1)
        order = sorted(range(n), key=lambda j: (-float(l1[j]), j))
        keep = torch.zeros(n, dtype=torch.bool)
        keep[order[:k]] = True
        masks[f"blocks.{b}.fc1.weight"] = keep[:, None].expand_as(w1).clone()
        masks[f"blocks.{b}.fc1.bias"] = keep.clone()
        w2 = state[f"blocks.{b}.fc2.weight"]
        masks[f"blocks.{b}.fc2.weight"] = keep[None, :].expand_as(w2).clone()
    return masks


def linear_flops(model: nn.Module, masks: dict[str, torch.Tensor] | None = None) -> int:
    """Multiply-accumulates of one example's forward pass through the model's Linear
    layers (``in·out`` each; a masked weight counts only its kept entries)."""
    total = 0
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            key = f"{name}.weight"
            if masks is not None and key in masks:
                total += int(masks[key].sum())
            else:
                total += mod.weight.numel()
    return total


__all__ = [
    "block_scores",
    "linear_flops",
    "lowest_blocks",
    "random_blocks",
    "remove_blocks",
    "remove_blocks_state",
    "unit_masks",
]
