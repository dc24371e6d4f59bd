"""Population optimizer: Adam / SGD over one flat buffer holding every member's parameters.

The update is PyTorch's (``torch.optim.Adam``, Kingma & Ba 2015, Algorithm 1 with L2 weight
decay added to the gradient; ``torch.optim.SGD`` with heavy-ball momentum,
``b_t = μ b_{t-1} + g_t``, ``θ_t = θ_{t-1} - lr b_t``), run by PyTorch's fused multi-tensor
kernels (``torch._fused_adam_`` / ``torch._fused_sgd_``): one pass over the whole
population when all members share hyperparameters, one call per distinct setting otherwise.

Masks multiply the gradient (``∂L/∂W = ∂L/∂W_eff ⊙ M``); since stored weights are zero where
``M = 0``, weight decay adds nothing there and Adam's moments stay exactly zero, so pruned
weights stay exactly zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from weightlab.train.config import OptimConfig


class FlatLayout:
    """Parameter ``j`` of every member lives in ``flat[N*off_j : N*(off_j+numel_j)]`` as an
    ``(N, *shape_j)`` contiguous block, so a layer's stacked weight is one dense tensor."""

    def __init__(self, n: int, shapes: dict[str, torch.Size]) -> None:
        self.n = n
        self.names = list(shapes)
        self.shapes = dict(shapes)
        self.offsets: dict[str, tuple[int, int]] = {}
        off = 0
        for name, shape in shapes.items():
            numel = int(torch.Size(shape).numel())
            self.offsets[name] = (off, numel)
            off += numel
        self.per_member = off

    @property
    def total(self) -> int:
        return self.n * self.per_member

    def view(self, flat: torch.Tensor, name: str) -> torch.Tensor:
        off, numel = self.offsets[name]
        return flat[self.n * off : self.n * (off + numel)].view(self.n, *self.shapes[name])

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: self.view(flat, name) for name in self.names}


class PopulationOptimizer:
    """Fused Adam/SGD on a flat ``(N * P)`` parameter buffer with per-member settings."""

    def __init__(
        self,
        flat: torch.Tensor,
        layout: FlatLayout,
        configs: Sequence[OptimConfig],
        masks: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.flat, self.layout = flat, layout
        self.configs = list(configs)
        groups: dict[OptimConfig, list[int]] = {}
        for i, c in enumerate(self.configs):
            groups.setdefault(c, []).append(i)
        self.groups = list(groups.items())
        self.masks = {k: v.to(flat.dtype) for k, v in (masks or {}).items()}
        self.steps = 0
        adam = any(c.name == "adam" for c in self.configs)
        mom = any(c.name == "sgd" and c.momentum > 0 for c in self.configs)
        self.exp_avg = torch.zeros_like(flat) if adam else None
        self.exp_avg_sq = torch.zeros_like(flat) if adam else None
        self.momentum = torch.zeros_like(flat) if mom else None
        self._step_t = torch.zeros((), dtype=torch.float32, device=flat.device)

    def _lists(self, tensor: torch.Tensor, members: list[int]) -> list[torch.Tensor]:
        if len(members) == self.layout.n:
            return [tensor]
        out = []
        for name in self.layout.names:
            block = self.layout.view(tensor, name)
            out.extend(block[i] for i in members)
        return out

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        """Apply one update given the flat gradient (modified in place: masked)."""
        for name, mask in self.masks.items():
            self.layout.view(grad, name).mul_(mask)
        self.steps += 1
        self._step_t.fill_(float(self.steps))
        for cfg, members in self.groups:
            params = self._lists(self.flat, members)
            grads = self._lists(grad, members)
            if cfg.name == "adam":
                m = self._lists(self.exp_avg, members)
                v = self._lists(self.exp_avg_sq, members)
                torch._fused_adam_(
                    params,
                    grads,
                    m,
                    v,
                    [],
                    [self._step_t] * len(params),
                    lr=cfg.lr,
                    beta1=cfg.betas[0],
                    beta2=cfg.betas[1],
                    weight_decay=cfg.weight_decay,
                    eps=cfg.eps,
                    amsgrad=False,
                    maximize=False,
                )
            else:
                buf = self._lists(self.momentum, members) if cfg.momentum > 0 else []
                torch._fused_sgd_(
                    params,
                    grads,
                    buf,
                    weight_decay=cfg.weight_decay,
                    momentum=cfg.momentum,
                    lr=cfg.lr,
                    dampening=0.0,
                    nesterov=False,
                    maximize=False,
                    is_first_step=self.steps == 1,
                )
