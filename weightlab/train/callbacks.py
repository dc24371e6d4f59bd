"""Step callbacks: procedures that change a model *during* training.

Probes (:mod:`weightlab.train.probes`) only read; a step callback may write: prune or
regrow weights (gradual magnitude pruning, SET, RigL), project onto a sparsity set
(iterative hard thresholding), reset optimizer state. :func:`weightlab.train.train` calls
each callback after every update, with the model in train mode and autograd enabled (a
callback that needs gradients, like RigL's dense gradient, computes them itself from the
step's batch), so a callback decides itself on which steps it acts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from weightlab.data.task import TaskData
from weightlab.train.losses import LossFn


@dataclass
class StepContext:
    """What a step callback sees after update ``step`` (1-based) of ``total``.

    ``x``, ``y``: the step's batch; ``loss_fn``: the run's per-example loss;
    ``optimizer``: the torch optimizer (its state may be reset where weights change);
    ``seed``: the member's seed (derive any randomness from it); ``data``: the task;
    ``loss``: the step's mean batch loss before the update (a detached 0-d tensor).
    """

    step: int
    total: int
    x: torch.Tensor
    y: torch.Tensor
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    seed: int
    data: TaskData
    loss: torch.Tensor | None = None


StepCallback = Callable[[nn.Module, StepContext], None]


class LossRecorder:
    """A step callback that keeps every step's training loss (the mean batch loss the
    update was computed from), e.g. for "mean training loss over the first k steps" or
    "mean of the last 10 steps" without extra forward passes. ``losses[t - 1]`` is step t's.
    """

    def __init__(self) -> None:
        self.losses: list[float] = []

    def __call__(self, model: nn.Module, ctx: StepContext) -> None:
        if ctx.loss is None:
            raise ValueError("LossRecorder needs StepContext.loss; run it inside train()")
        self.losses.append(float(ctx.loss))


__all__ = ["LossRecorder", "StepCallback", "StepContext"]
