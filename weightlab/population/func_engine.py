"""Generic path for any module: ``torch.func`` (``functional_call`` + ``vmap``) over stacked
parameters and buffers.

The parameters of all members live in one flat leaf tensor (layout of
:class:`~weightlab.population.optim.FlatLayout`); each step takes views of it, evaluates
``vmap(member_loss)`` and differentiates ``Σ_n L_n`` once, which gives every member its own
gradient ``∂L_n/∂θ_n`` because members share no parameters. Buffers (BatchNorm running
statistics, Ioffe & Szegedy 2015, Algorithm 2) are stacked ``(N, ...)`` tensors updated in
place under ``vmap``, so each member keeps its own statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from weightlab.population.optim import FlatLayout, PopulationOptimizer
from weightlab.train.config import OptimConfig


class FuncEngine:
    """Trains ``N`` copies of any architecture as one vectorized computation."""

    def __init__(
        self,
        template: nn.Module,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        optims: Sequence[OptimConfig] | None,
        device: torch.device,
    ) -> None:
        self.template = template.to(device)
        self.n = next(iter(params.values())).shape[0]
        self.layout = FlatLayout(self.n, {k: v.shape[1:] for k, v in params.items()})
        self.flat = torch.empty(self.layout.total, device=device)
        for name, v in self.layout.views(self.flat).items():
            v.copy_(params[name])
        self.flat.requires_grad_(True)
        self._buffers = {k: v.to(device, copy=True) for k, v in buffers.items()}
        self.opt = PopulationOptimizer(self.flat, self.layout, optims, masks) if optims else None

    def params(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.layout.views(self.flat).items()}

    def buffers(self) -> dict[str, torch.Tensor]:
        return self._buffers

    def _logits(self, params, x: torch.Tensor, x_dim: int | None) -> torch.Tensor:
        def one(p, b, xi):
            return functional_call(self.template, (p, b), (xi,))

        return vmap(one, in_dims=(0, 0, x_dim))(params, self._buffers, x)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step for every member; returns per-member batch losses ``(N,)``."""
        self.template.train()
        per_member = y.dim() == 2
        logits = self._logits(self.layout.views(self.flat), x, 0 if per_member else None)
        yy = y if per_member else y.unsqueeze(0).expand(self.n, -1)
        loss = F.cross_entropy(logits.transpose(1, 2), yy, reduction="none").mean(1)
        (grad,) = torch.autograd.grad(loss.sum(), self.flat)
        self.opt.step(grad)
        return loss.detach()

    @torch.no_grad()
    def evaluate(self, split, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member summed cross-entropy and number correct (eval mode)."""
        self.template.eval()
        try:
            params = self.params()
            dev = self.flat.device
            loss = torch.zeros(self.n, device=dev, dtype=torch.float64)
            correct = torch.zeros(self.n, device=dev, dtype=torch.long)
            for s in range(0, len(split), rows):
                xs, ys = split.x[s : s + rows], split.y[s : s + rows]
                logits = self._logits(params, xs, None)
                yy = ys.unsqueeze(0).expand(self.n, -1)
                ce = F.cross_entropy(logits.transpose(1, 2), yy, reduction="none")
                loss += ce.sum(1, dtype=torch.float64)
                correct += (logits.argmax(-1) == yy).sum(1)
        finally:
            self.template.train()
        return loss, correct
