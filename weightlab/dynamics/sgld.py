"""Stochastic gradient Langevin dynamics (SGLD), full batch: the noise draw and the step.

Welling & Teh 2011 ("Bayesian Learning via Stochastic Gradient Langevin Dynamics", Eq. 4)
with the full data set as the batch (the unadjusted Langevin algorithm):

    θ_{t+1} = θ_t + (η/2) ∇ log p(θ_t | D) + √η · ξ_t,   ξ_t ~ N(0, I),

whose stationary law tends to the posterior ``p(θ | D)`` as ``η -> 0``. weightlab writes
``-log p(θ | D) = U(θ) + const`` with

    U(θ) = L(θ) + (λ/2) ‖θ‖²,

``L`` the training loss (``TrainConfig.loss``, its batch mean) and ``λ`` the optimizer's
``weight_decay`` (L2 added to the gradient, as ``sgd``'s). For a posterior the training
loss must be the *summed* negative log-likelihood of the ``n`` samples (a per-example
loss multiplied by ``n``, whose batch mean is the sum) and ``λ = 1/σ_p²`` the precision of
a ``N(0, σ_p² I)`` prior; the update is then ``θ <- θ - (η/2)(∇L + λθ) + √η ξ``.
``η`` is the optimizer's ``lr`` times a parameter group's ``lr_mult`` and the schedule's
factor (a per-group ``η`` is a diagonal preconditioner ``M``: ``θ <- θ - (M/2)∇U +
√M ξ``, which keeps the posterior stationary as ``M`` is constant).

Noise: update ``t`` (1-based) of the member with seed ``s`` draws ``ξ_t`` as one float32
vector ``randn(P)`` from ``generator(derive_seed("sgld", s, t))`` (float32: torch's CPU
normal sampler is ~4× faster than in float64), split over the trainable parameters in the
model's ``named_parameters`` order and cast to each one's dtype. The single-model loop and every population member draw the same ``ξ_t``, so a
member equals its solo run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator


def check_step_size(eta: float) -> None:
    """Reject an SGLD step size ``η <= 0`` (or non-finite) with one line."""
    if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta > 0):
        raise ConfigError(f"SGLD step size η (lr) must be > 0, got {eta}; pass a positive lr")


def sgld_noise(seed: int, step: int, numel: int) -> torch.Tensor:
    """``ξ_step`` of member ``seed``: ``numel`` standard normals, float32, on the CPU."""
    g = generator(derive_seed("sgld", int(seed), int(step)))
    return torch.randn(numel, generator=g, dtype=torch.float32)


def split_noise(flat: torch.Tensor, shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
    """``flat`` cut into consecutive pieces of ``shapes`` (the parameters' order)."""
    out, at = [], 0
    for shape in shapes:
        n = math.prod(shape)
        out.append(flat[at : at + n].view(shape))
        at += n
    return out


def sgld_update_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    noises: Sequence[torch.Tensor],
    *,
    lr: float,
    weight_decay: float,
) -> None:
    """``p <- p - (η/2)(g + λp) + √η ξ`` in place for each tensor (the one arithmetic both
    the loop's :class:`SGLD` and the population optimizer run, so they agree bitwise)."""
    half, root = -0.5 * lr, math.sqrt(lr)
    for p, g, xi in zip(params, grads, noises, strict=True):
        if weight_decay:
            g = g.add(p, alpha=weight_decay)
        p.add_(g, alpha=half)
        p.add_(xi, alpha=root)


class SGLD(torch.optim.Optimizer):
    """Full-batch SGLD for the single-model loop (``OptimConfig(name="sgld")``).

    Args:
        params: parameters or torch param groups (``lr``, ``weight_decay``).
        order: every trainable parameter in ``named_parameters`` order: the order in
            which ``ξ_t`` is split (default: the groups' order).
        seed: the member's seed (``train(..., seed=)``); ``ξ_t`` comes from
            ``derive_seed("sgld", seed, t)``.
        lr: step size ``η`` (> 0). weight_decay: prior precision ``λ`` (>= 0).
    """

    def __init__(
        self,
        params: Iterable,
        *,
        lr: float,
        weight_decay: float = 0.0,
        seed: int = 0,
        order: Sequence[torch.Tensor] | None = None,
    ) -> None:
        check_step_size(lr)
        if weight_decay < 0:
            raise ConfigError(
                f"SGLD prior precision (weight_decay) must be >= 0, got {weight_decay}"
            )
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        grouped = [p for g in self.param_groups for p in g["params"]]
        self.order = list(order) if order is not None else grouped
        if {id(p) for p in self.order} != {id(p) for p in grouped}:
            raise ConfigError("SGLD order must list exactly the optimized parameters")
        self.seed = int(seed)
        self.steps = 0

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch.optim.Optimizer.step)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.steps += 1
        numel = sum(p.numel() for p in self.order)
        pieces = split_noise(
            sgld_noise(self.seed, self.steps, numel), [p.shape for p in self.order]
        )
        noise = {id(p): xi for p, xi in zip(self.order, pieces, strict=True)}
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            gs = [p.grad for p in ps]
            xs = [noise[id(p)].to(p.device, p.dtype) for p in ps]
            sgld_update_(ps, gs, xs, lr=group["lr"], weight_decay=group["weight_decay"])
        return loss
