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

import math
from collections.abc import Sequence

import torch

from weightlab.train.config import OptimConfig

_FUSED: dict[str, bool] = {}


def fused_available(device: torch.device) -> bool:
    """Whether ``torch._fused_adam_`` / ``torch._fused_sgd_`` run on ``device``'s type
    (CPU support arrived after torch 2.3, the oldest version weightlab supports)."""
    kind = torch.device(device).type
    if kind not in _FUSED:
        try:
            p, g = torch.zeros(2, device=device), torch.ones(2, device=device)
            m, v = torch.zeros_like(p), torch.zeros_like(p)
            t = torch.ones((), device=device)
            torch._fused_adam_(
                [p],
                [g],
                [m],
                [v],
                [],
                [t],
                lr=0.1,
                beta1=0.9,
                beta2=0.999,
                weight_decay=0.0,
                eps=1e-8,
                amsgrad=False,
                maximize=False,
            )
            torch._fused_sgd_(
                [p],
                [g],
                [],
                weight_decay=0.0,
                momentum=0.0,
                lr=0.1,
                dampening=0.0,
                nesterov=False,
                maximize=False,
                is_first_step=True,
            )
            _FUSED[kind] = True
        except (AttributeError, RuntimeError, NotImplementedError, TypeError):
            _FUSED[kind] = False
    return _FUSED[kind]


def adam_reference_(params, grads, exp_avgs, exp_avg_sqs, step: int, cfg: OptimConfig) -> None:
    """Adam update with ``torch.optim.Adam``'s single-tensor arithmetic (the fallback
    where the fused kernel is unavailable)."""
    b1, b2 = cfg.betas
    bc1, bc2_sqrt = 1 - b1**step, math.sqrt(1 - b2**step)
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        if cfg.weight_decay:
            g = g.add(p, alpha=cfg.weight_decay)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v.sqrt() / bc2_sqrt).add_(cfg.eps)
        p.addcdiv_(m, denom, value=-cfg.lr / bc1)


def sgd_reference_(params, grads, bufs, first: bool, cfg: OptimConfig) -> None:
    """SGD (heavy-ball momentum, no dampening) with ``torch.optim.SGD``'s arithmetic."""
    for j, (p, g) in enumerate(zip(params, grads, strict=True)):
        if cfg.weight_decay:
            g = g.add(p, alpha=cfg.weight_decay)
        if bufs:
            g = bufs[j].copy_(g) if first else bufs[j].mul_(cfg.momentum).add_(g)
        p.add_(g, alpha=-cfg.lr)


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
        self.fused = fused_available(flat.device)

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
                if not self.fused:
                    adam_reference_(params, grads, m, v, self.steps, cfg)
                    continue
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
                if not self.fused:
                    sgd_reference_(params, grads, buf, self.steps == 1, cfg)
                    continue
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
