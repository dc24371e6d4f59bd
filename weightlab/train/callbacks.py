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
    ``seed``: the member's seed (derive any randomness from it); ``data``: the task.
    """

    step: int
    total: int
    x: torch.Tensor
    y: torch.Tensor
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    seed: int
    data: TaskData


StepCallback = Callable[[nn.Module, StepContext], None]

__all__ = ["StepCallback", "StepContext"]
