"""Random search over node (neuron) masks of an MLP, scored by short proxy training.

Row [#31], "Random Search as a Baseline for Sparse Neural Network Architecture Search"
(2024): Random Search is applied "on the node space of an overparameterized network";
each candidate keeps a random subset of every hidden layer's units, all candidates start
from the *same* initialization (sub-networks of one parent), a short proxy training ranks
them, and the best is trained fully and compared with a random configuration at the same
sparsity.

- :func:`node_keep_counts`: ``⌊n·(1 - s)⌋`` units kept per hidden layer (at least one).
- :func:`random_node_keep` / :func:`node_masks`: a random node subset and the weight masks
  it implies for :class:`weightlab.models.MLP` (``layers.i.weight`` rows and columns,
  ``layers.i.bias`` entries of removed units; input and output nodes always kept).
- :func:`proxy_scores`: train every candidate ``cfg.epochs`` epochs as one population and
  return its validation loss and accuracy at the end (the proxy reward: lower loss ranks
  higher), :func:`best_candidate` picks it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from weightlab.errors import ConfigError


def node_keep_counts(widths: Sequence[int], sparsity: float) -> list[int]:
    """Units kept in each hidden layer of an MLP ``widths = [in, h1, ..., out]`` at node
    ``sparsity``: ``⌊h·(1 - sparsity)⌋``; keeping none is an error."""
    if not 0 <= sparsity < 1:
        raise ConfigError(f"node sparsity must lie in [0, 1); got {sparsity}")
    counts = []
    for h in widths[1:-1]:
        k = math.floor(h * (1 - sparsity) + 1e-9)  # 300·(1 - 0.8) is 59.999… in floats
        if k < 1:
            raise ConfigError(
                f"node sparsity {sparsity:g} keeps no unit of a hidden layer of width {h}; "
                "lower the sparsity or widen the layer"
            )
        counts.append(k)
    return counts


def random_node_keep(
    widths: Sequence[int], sparsity: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """One bool vector per hidden layer keeping a uniformly random subset of exactly
    :func:`node_keep_counts` units, drawn layer by layer from ``generator``."""
    keep = []
    for h, k in zip(widths[1:-1], node_keep_counts(widths, sparsity), strict=True):
        v = torch.zeros(h, dtype=torch.bool)
        v[torch.randperm(h, generator=generator)[:k]] = True
        keep.append(v)
    return keep


def node_masks(widths: Sequence[int], keep: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weight and bias masks of an MLP ``widths`` that remove the hidden units not in
    ``keep`` (one bool vector per hidden layer): a removed unit loses its incoming row and
    bias and its outgoing column, so it neither fires nor feeds the next layer."""
    hidden = list(widths[1:-1])
    if len(keep) != len(hidden) or any(k.shape != (h,) for k, h in zip(keep, hidden, strict=False)):
        raise ConfigError(
            f"node masks need one bool vector per hidden layer of widths {hidden}; "
            f"got shapes {[tuple(k.shape) for k in keep]}"
        )
    alive = [
        torch.ones(widths[0], dtype=torch.bool),
        *keep,
        torch.ones(widths[-1], dtype=torch.bool),
    ]
    masks = {}
    for i in range(len(widths) - 1):
        out_alive, in_alive = alive[i + 1], alive[i]
        masks[f"layers.{i}.weight"] = out_alive[:, None] & in_alive[None, :]
        masks[f"layers.{i}.bias"] = out_alive.clone()
    return masks


def proxy_scores(
    factory: Callable[[int], nn.Module],
    candidates: Sequence[dict[str, torch.Tensor]],
    data,
    cfg,
    *,
    seed: int,
    data_seed: int,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> list[dict]:
    """Train every candidate mask from the same initialization ``factory(seed)`` and data
    order for ``cfg`` (the short proxy), as one population; return per candidate
    ``{"val_loss", "val_acc", "diverged"}`` at the end of the proxy."""
    from weightlab.population import MemberSpec
    from weightlab.recipes.members import train_members

    specs = [MemberSpec(seed=seed, data_seed=data_seed, masks=m) for m in candidates]
    results, _ = train_members(factory, specs, data, cfg, device=device, progress=progress)
    return [
        {
            "val_loss": r.final.val_loss,
            "val_acc": r.final.val_acc,
            "diverged": bool(r.diverged),
        }
        for r in results
    ]


def best_candidate(scores: Sequence[dict]) -> int:
    """Index of the candidate with the lowest finite proxy validation loss (the first on
    ties); diverged candidates rank last."""
    if not scores:
        raise ConfigError("no candidates to rank; ask for at least one trial")

    def key(i: int):
        v = scores[i]["val_loss"]
        bad = scores[i]["diverged"] or v is None or not math.isfinite(v)
        return (bad, v if not bad else 0.0, i)

    return min(range(len(scores)), key=key)


__all__ = [
    "best_candidate",
    "node_keep_counts",
    "node_masks",
    "proxy_scores",
    "random_node_keep",
]
