"""Generic path for any module: ``torch.func`` (``functional_call`` + ``vmap``) over stacked
parameters and buffers.

The parameters of all members live in one flat tensor (layout of
:class:`~weightlab.population.optim.FlatLayout`); each step takes its per-parameter views as
autograd leaves, evaluates ``vmap(member_loss)`` and differentiates ``Σ_n L_n`` once with
respect to them, which gives every member its own gradient ``∂L_n/∂θ_n`` because members
share no parameters; the gradients land in a flat buffer of the same layout for the fused
optimizer step. Buffers (BatchNorm running
statistics, Ioffe & Szegedy 2015, Algorithm 2) are stacked ``(N, ...)`` tensors updated in
place under ``vmap``, so each member keeps its own statistics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from weightlab.models.dropout import dropout_input_shapes, dropout_layers, dropout_masks, use_masks
from weightlab.population.loss import EngineLoss
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
        seeds: Sequence[int] | None = None,
        *,
        loss: EngineLoss | None = None,
        opt_kwargs: Mapping[str, object] | None = None,
    ) -> None:
        self.template = template.to(device)
        self.loss = loss or EngineLoss()  # default: cross-entropy on class labels
        # weightlab Dropout: member n's mask of layer l at update t is drawn outside vmap
        # from derive_seed("dropout", seeds[n], t, l), as the single-model loop draws it
        self._dropout = dropout_layers(self.template)
        self._seeds = list(seeds) if seeds is not None else None
        self._dropout_shapes: dict[tuple, list] = {}
        self._updates = 0
        self.n = next(iter(params.values())).shape[0]
        self.layout = FlatLayout(self.n, {k: v.shape[1:] for k, v in params.items()})
        dtype = next(iter(params.values())).dtype
        self.flat = torch.empty(self.layout.total, device=device, dtype=dtype)
        for name, v in self.layout.views(self.flat).items():
            v.copy_(params[name])
        self.grad = torch.zeros_like(self.flat)
        self._grad_views = list(self.layout.views(self.grad).values())
        self._buffers = {k: v.to(device, copy=True) for k, v in buffers.items()}
        self.opt = (
            PopulationOptimizer(self.flat, self.layout, optims, masks, **dict(opt_kwargs or {}))
            if optims
            else None
        )

    def params(self) -> dict[str, torch.Tensor]:
        return self.layout.views(self.flat)

    def buffers(self) -> dict[str, torch.Tensor]:
        return self._buffers

    def _logits(self, params, x: torch.Tensor, x_dim: int | None, masks=None) -> torch.Tensor:
        def one(p, b, xi, mi):
            if mi is None:
                return functional_call(self.template, (p, b), (xi,))
            with use_masks(self._dropout, mi):
                return functional_call(self.template, (p, b), (xi,))

        return self._map_members(one, params, self._buffers, x, x_dim, masks)

    def _map_members(self, fn, params, buffers, x, x_dim, masks):
        """``fn(θ_n, β_n, x_n, masks_n)`` for every member, stacked: one ``vmap`` call."""
        m_dim = 0 if masks is not None else None
        return vmap(fn, in_dims=(0, 0, x_dim, m_dim))(params, buffers, x, masks)

    def _dropout_masks(self, x: torch.Tensor, x_dim: int | None) -> list[torch.Tensor] | None:
        """Per layer, the stacked ``(N, *shape)`` masks of update ``self._updates``
        (:func:`weightlab.models.dropout.dropout_masks`), or ``None`` without Dropout."""
        if not self._dropout:
            return None
        if self._seeds is None:
            raise ValueError("an engine training weightlab Dropout needs the members' seeds")
        xi = x if x_dim is None else x.select(x_dim, 0)
        key = (tuple(xi.shape), xi.dtype)
        if key not in self._dropout_shapes:
            self._dropout_shapes[key] = dropout_input_shapes(self.template, xi)
        shapes = self._dropout_shapes[key]
        per_member = [
            dropout_masks(self._dropout, s, self._updates, shapes, self.flat.dtype, x.device)
            for s in self._seeds
        ]
        return [torch.stack(layer) for layer in zip(*per_member, strict=True)]

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step for every member; returns per-member batch losses ``(N,)``."""
        self.template.train()
        per_member = y.dim() == 2 + self.loss.target_ndim
        x_dim = 0 if per_member else None
        self._updates += 1
        masks = self._dropout_masks(x, x_dim)
        # per-parameter leaves (views of the flat buffer, no copy): differentiating with
        # respect to them, not the whole buffer, spares every view's backward a full-size
        # zero tensor plus an add (SliceBackward into the flat gradient)
        leaves = {k: v.requires_grad_(True) for k, v in self.layout.views(self.flat).items()}
        logits = self._logits(leaves, x, x_dim, masks)
        loss = self.loss.per_example(logits, self.loss.member_targets(y, self.n)).mean(1)
        grads = torch.autograd.grad(loss.sum(), list(leaves.values()))
        with torch.no_grad():
            torch._foreach_copy_(self._grad_views, list(grads))
            self.opt.step(self.grad)
        return loss.detach()

    @torch.no_grad()
    def evaluate(self, split, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member summed loss ``(N,)`` and number correct ``(N,)`` (classification) or
        summed squared error per output ``(N, *out)`` (regression), in eval mode."""
        self.template.eval()
        try:
            params = self.params()
            loss, second = None, None
            for s in range(0, len(split), rows):
                xs, ys = split.x[s : s + rows], split.y[s : s + rows]
                out = self._logits(params, xs, None)
                part = self.loss.eval_stats(out, self.loss.member_targets(ys, self.n))
                loss = part[0] if loss is None else loss + part[0]
                second = part[1] if second is None else second + part[1]
        finally:
            self.template.train()
        return loss, second
