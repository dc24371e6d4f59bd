"""TAS: network pruning via transformable architecture search, width only (Dong & Yang
2019, "Network Pruning via Transformable Architecture Search", arXiv:1905.09717).

Each hidden layer ``l`` of an MLP has ``K`` candidate widths ``C_1 < ... < C_K`` and
architecture parameters ``α_l ∈ R^K``. In a training-mode forward (:class:`TASMLP`):

1. Gumbel-softmax sampling (Sec. 3.1, the authors' ``select2withP``): perturbed logits
   ``z_j = (log softmax(α_l)_j + o_j) / τ`` with Gumbel noise ``o_j``; ``|I| = 2`` distinct
   candidates are drawn with probabilities ``softmax(z)``, and their weights are
   ``ĥ_j = softmax(z_I)_j`` (the softmax over the sampled set), differentiable in ``α``.
2. Channel-wise interpolation (CWI, Eq. 4): the width-``C_j`` output is the first ``C_j``
   units of the layer's full output, resized to ``max_{k∈I} C_k`` units by averaging
   over proportional channel bins (:func:`channel_interp`); the layer's output is
   ``Σ_{j∈I} ĥ_j · CWI(O[:, :C_j], max_{k∈I} C_k)``, then the activation. The next layer
   reads those units through the first columns of its weight.

The FLOP loss (Eq. 7–8, :func:`cost_loss`) uses the expected cost ``E_cost`` under the
width distributions ``softmax(α)`` (:meth:`TASMLP.expected_flops`; for a chain of
Linear layers ``E[w_{l−1} w_l] = E[w_{l−1}] E[w_l]``, the widths being independent) and
the cost ``F_cost`` of the argmax architecture: ``log E_cost`` if ``F_cost > (1 + t) R``,
``−log E_cost`` if ``F_cost < (1 − t) R``, else 0, for the target ``R``.

In eval mode the forward is the argmax architecture itself (the first ``argmax`` units
of each layer). The searched widths (:meth:`TASMLP.argmax_widths`) are then trained from
scratch by distillation from the unpruned net (:mod:`weightlab.sparsity.distill`).

Training goes through the one loop: :class:`TASLoss` (the task loss plus ``λ · L_cost``,
closing over the model) is ``TrainConfig.loss``; :class:`TASCallback`, a step callback,
sets the Gumbel seed and the temperature for the next step (τ decays linearly, Sec. 4);
the architecture parameters (``arch.logits``) get their own learning rate through a
:class:`weightlab.train.ParamGroup`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator
from weightlab.train.callbacks import StepContext
from weightlab.train.losses import LossFn, cross_entropy_per_example

__all__ = [
    "ArchLogits",
    "TASCallback",
    "TASLoss",
    "TASMLP",
    "candidate_widths",
    "channel_interp",
    "cost_loss",
    "gumbel_select",
    "linear_tau",
    "mlp_flops",
    "uniform_width",
]


def mlp_flops(widths: Sequence[float]) -> float:
    """Matmul FLOPs of one forward pass of an MLP ``[in, h1, ..., out]`` per example:
    ``Σ 2 · w_{l−1} · w_l`` (biases and activations not counted). Widths may be
    fractional (expected widths)."""
    return float(sum(2 * a * b for a, b in zip(widths[:-1], widths[1:], strict=True)))


def candidate_widths(width: int, fractions: Sequence[float]) -> tuple[int, ...]:
    """The distinct widths ``max(1, round(f · width))`` for ``f`` in ``fractions``,
    ascending (e.g. 256 and {25, 50, 75, 100%} give 64, 128, 192, 256)."""
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ConfigError(f"width fractions must lie in (0, 1], got {tuple(fractions)}")
    return tuple(sorted({max(1, math.floor(f * width + 0.5)) for f in fractions}))


def channel_interp(h: torch.Tensor, width: int) -> torch.Tensor:
    """CWI (TAS Eq. 4, the authors' ``ChannelWiseInterV1``): resize the last dim of ``h``
    from ``c`` to ``width`` units; output unit ``o`` is the mean of input units
    ``floor(o·c/width) .. ceil((o+1)·c/width) − 1``. Identity when ``c == width``."""
    c = h.shape[-1]
    if c == width:
        return h
    lead = h.shape[:-1]
    return F.adaptive_avg_pool1d(h.reshape(-1, 1, c), width).reshape(*lead, width)


def gumbel_select(
    alpha: torch.Tensor, tau: float, gen: torch.Generator, num: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``num`` distinct candidates of one layer and their mixing weights.

    ``z = (log_softmax(α) + o) / τ`` with Gumbel noise ``o = −log(E)``, ``E ~ Exp(1)``
    drawn from ``gen``; indices are drawn without replacement with probabilities
    ``softmax(z)``; weights ``softmax(z[idx])``. Returns ``(idx (num,), weights (num,))``.
    """
    k = alpha.shape[-1]
    num = min(num, k)
    e = torch.empty(k).exponential_(generator=gen).clamp_min(1e-20)
    gumbel = (-e.log()).to(alpha.device, alpha.dtype)
    z = (torch.log_softmax(alpha, -1) + gumbel) / tau
    probs = torch.softmax(z.detach().double(), -1).cpu() + 1e-7
    idx = torch.multinomial(probs, num, replacement=False, generator=gen).to(alpha.device)
    return idx, torch.softmax(z[idx], -1)


def linear_tau(step: int, total: int, tau_max: float = 10.0, tau_min: float = 0.1) -> float:
    """Gumbel temperature at update ``step`` (1-based) of ``total``: linear from
    ``tau_max`` to ``tau_min`` (TAS Sec. 4: "τ is linearly decayed from 10 to 0.1")."""
    if total <= 1:
        return tau_min
    frac = min(1.0, max(0.0, (step - 1) / (total - 1)))
    return tau_max + (tau_min - tau_max) * frac


class ArchLogits(nn.Module):
    """The architecture parameters ``α``: ``(hidden layers, K)``, drawn ``N(0, 0.01²)`` as
    in the authors' code (``reset_parameters`` runs under weightlab's seeded init)."""

    def __init__(self, n_layers: int, k: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_layers, k))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.logits.normal_(0.0, 0.01)


class TASMLP(nn.Module):
    """A searchable MLP: full-width Linear layers ``layers.0 .. layers.{L−1}`` (the names of
    :class:`weightlab.models.MLP`), ReLU between them, and ``arch.logits`` over the
    candidate widths of every hidden layer.

    Args:
        widths: the unpruned ``[in, h1, ..., out]``.
        fractions: candidate width fractions per hidden layer (TAS: a set per layer).
        num_sampled: ``|I|``, the candidates mixed per layer and step (2 in TAS).
        gumbel_seed: seeds the Gumbel draws (with the step, see :meth:`set_step`).
    """

    def __init__(
        self,
        widths: Sequence[int],
        fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
        num_sampled: int = 2,
        gumbel_seed: int = 0,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 3 or any(w <= 0 for w in widths):
            raise ConfigError(f"a TAS MLP needs >= 1 hidden layer and positive widths: {widths}")
        if num_sampled < 1:
            raise ConfigError(f"num_sampled must be >= 1, got {num_sampled}")
        self.widths = widths
        self.choices = [candidate_widths(w, fractions) for w in widths[1:-1]]
        k = len(self.choices[0])
        if any(len(c) != k for c in self.choices):
            raise ConfigError("every hidden layer needs the same number of distinct candidates")
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.arch = ArchLogits(len(self.choices), k)
        self.num_sampled = int(num_sampled)
        self.gumbel_seed = int(gumbel_seed)
        self.step = 1
        self.tau = 10.0

    def set_step(self, step: int, tau: float) -> None:
        """The update the next training-mode forward belongs to, and its temperature."""
        self.step, self.tau = int(step), float(tau)

    def width_probs(self) -> list[torch.Tensor]:
        return list(torch.softmax(self.arch.logits, -1).unbind(0))

    def argmax_widths(self) -> list[int]:
        """The searched architecture ``[in, argmax widths..., out]``."""
        picks = self.arch.logits.detach().argmax(-1).tolist()
        return [
            self.widths[0],
            *(c[p] for c, p in zip(self.choices, picks, strict=True)),
            self.widths[-1],
        ]

    def expected_flops(self) -> torch.Tensor:
        """``E_cost``: :func:`mlp_flops` of the expected widths (differentiable in ``α``)."""
        exp = [torch.tensor(float(self.widths[0]))]
        for p, c in zip(self.width_probs(), self.choices, strict=True):
            exp.append((p * torch.tensor(c, dtype=p.dtype, device=p.device)).sum())
        exp.append(torch.tensor(float(self.widths[-1])))
        return sum(2 * a * b for a, b in zip(exp[:-1], exp[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        n_hidden = len(self.choices)
        if not self.training:
            widths = self.argmax_widths()
            for i, layer in enumerate(self.layers):
                out = widths[i + 1]
                h = F.linear(h, layer.weight[:out, : h.shape[-1]], layer.bias[:out])
                if i < n_hidden:
                    h = F.relu(h)
            return h
        gen = generator(derive_seed("tas-gumbel", self.gumbel_seed, self.step))
        for i, layer in enumerate(self.layers):
            z = F.linear(h, layer.weight[:, : h.shape[-1]], layer.bias)
            if i == n_hidden:
                return z
            idx, weights = gumbel_select(self.arch.logits[i], self.tau, gen, self.num_sampled)
            sizes = [self.choices[i][j] for j in idx.tolist()]
            top = max(sizes)
            h = sum(w * channel_interp(z[:, :c], top) for w, c in zip(weights, sizes, strict=True))
            h = F.relu(h)
        return h


def cost_loss(
    expected: torch.Tensor, current: float, target: float, tolerance: float = 0.05
) -> torch.Tensor:
    """TAS Eq. 8: ``log E_cost`` if ``current > (1 + t)·target``, ``−log E_cost`` if
    ``current < (1 − t)·target``, else 0 (``current`` = ``F_cost`` of the argmax net)."""
    if current > (1 + tolerance) * target:
        return torch.log(expected)
    if current < (1 - tolerance) * target:
        return -torch.log(expected)
    return expected * 0.0


class TASLoss:
    """The search loss as a per-example loss for the one loop: the task loss per example
    plus ``λ_cost · L_cost`` (the same for every example, so the batch mean adds it once).
    ``target_flops``: ``R``; ``weight``: ``λ_cost`` (2 in TAS); ``tolerance``: ``t``."""

    def __init__(
        self,
        model: TASMLP,
        target_flops: float,
        weight: float = 2.0,
        tolerance: float = 0.05,
        task_loss: LossFn = cross_entropy_per_example,
    ) -> None:
        if not target_flops > 0 or weight < 0 or not 0 <= tolerance < 1:
            raise ConfigError("TASLoss needs target_flops > 0, weight >= 0, tolerance in [0, 1)")
        self.model, self.target, self.weight, self.tolerance = (
            model,
            target_flops,
            weight,
            tolerance,
        )
        self.task_loss = task_loss

    def cost(self) -> torch.Tensor:
        current = mlp_flops(self.model.argmax_widths())
        return cost_loss(self.model.expected_flops(), current, self.target, self.tolerance)

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per = self.task_loss(pred, target)
        return per + self.weight * self.cost().to(per.dtype)


class TASCallback:
    """Step callback: after update ``t`` of ``T``, the next forward samples with the seed of
    step ``t + 1`` and temperature :func:`linear_tau` ``(t + 1, T)``."""

    def __init__(self, tau_max: float = 10.0, tau_min: float = 0.1) -> None:
        self.tau_max, self.tau_min = tau_max, tau_min

    def __call__(self, model: nn.Module, ctx: StepContext) -> None:
        nxt = ctx.step + 1
        model.set_step(nxt, linear_tau(nxt, ctx.total, self.tau_max, self.tau_min))


def uniform_width(widths: Sequence[int], flops: float) -> tuple[int, float]:
    """The uniform hidden width ``w`` (every hidden layer ``w``) whose :func:`mlp_flops` is
    closest to ``flops``; returns ``(w, relative FLOP difference)``."""
    n_hidden = len(widths) - 2
    best = None
    for w in range(1, max(widths[1:-1]) + 1):
        f = mlp_flops([widths[0], *([w] * n_hidden), widths[-1]])
        gap = (f - flops) / flops
        if best is None or abs(gap) < abs(best[1]):
            best = (w, gap)
    return best
