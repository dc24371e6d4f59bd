"""Input-feature selection: RelChaNet and the baselines it is compared with.

RelChaNet ("RelChaNet: Neural Network Feature Selection using Relative Change Scores",
methods row [#101]) prunes and regrows *input neurons* of a dense network while it trains,
following the authors' algorithm:

- ``k`` selected inputs plus ``c = ⌈0.2·(d − k)⌉`` randomly drawn candidate inputs feed the
  first layer; every other input is cut (its first-layer column masked to zero);
- during an interval of ``interval`` (100) mini-batches, ``G``, the first layer's gradient,
  is summed over the interval's batches;
- at the interval's end every active input ``i`` scores ``s_i = Σ_j |G_ji|`` (the relative
  change its entry induces), standardized over the active inputs
  (``z_i = (s_i − mean) / std``); each input keeps the best ``z`` it ever had;
- the ``k`` inputs with the best kept scores become the selection, ``c`` new candidates are
  drawn at random from the rest, and the columns of inputs that enter are reset to
  ``U(−1e-8, 1e-8)`` (columns that leave are masked; their optimizer state zeroed).

The selection training runs in :func:`weightlab.train.train` through the step callback
:class:`RelChaNet` (input masking is a :class:`~weightlab.core.Mask` on the first layer's
columns). The final selection is the top ``k`` by kept score (ties to the lower index).

Baselines (scores; higher = keep; :func:`top_k_features` picks): :func:`random_features`,
:func:`variance_scores` (training-set variance of each input), :func:`magnitude_feature_scores`
(``Σ_j |W_ji|`` of the first layer of a dense MLP trained on all inputs).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from weightlab.core.mask import apply_masks
from weightlab.core.transforms import _resolve
from weightlab.errors import ConfigError
from weightlab.seeding import generator
from weightlab.train.callbacks import StepContext

CANDIDATE_FRACTION = 0.2
INTERVAL = 100
RESET_SCALE = 1e-8


def check_k(k: int, d: int) -> int:
    """``k`` must select at least one and fewer than all ``d`` inputs."""
    if isinstance(k, bool) or int(k) != k or not 1 <= k < d:
        raise ConfigError(f"cannot select k={k} of {d} input features; choose k in 1..{d - 1}")
    return int(k)


def n_candidates(d: int, k: int, fraction: float = CANDIDATE_FRACTION) -> int:
    """``⌈fraction · (d − k)⌉`` candidate inputs (RelChaNet's default fraction 0.2)."""
    return math.ceil(fraction * (d - check_k(k, d)) - 1e-12)


def top_k_features(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted indices of the ``k`` highest scores; ties go to the lower index."""
    check_k(k, scores.numel())
    order = torch.argsort(-scores.detach().double().cpu(), stable=True)
    return torch.sort(order[:k]).values


def random_features(d: int, k: int, seed: int) -> torch.Tensor:
    """``k`` inputs drawn uniformly without replacement (sorted)."""
    check_k(k, d)
    return torch.sort(torch.randperm(d, generator=generator(seed))[:k]).values


def variance_scores(x: torch.Tensor) -> torch.Tensor:
    """Each input's variance over the training examples ``x`` (``(n, d)``)."""
    return x.detach().double().var(dim=0, unbiased=False).cpu()


def magnitude_feature_scores(first_weight: torch.Tensor) -> torch.Tensor:
    """``Σ_j |W_ji|``: the L1 norm of input ``i``'s column of a first layer ``(h, d)``."""
    return first_weight.detach().double().abs().sum(dim=0).cpu()


def column_mask(shape: torch.Size, active: torch.Tensor) -> torch.Tensor:
    """A first-layer mask ``(h, d)`` that keeps the columns ``active``."""
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[:, active] = True
    return mask


class RelChaNet:
    """Step callback running RelChaNet's input pruning and regrowth on ``first`` (the
    first layer's weight, ``(h, d)``) during :func:`weightlab.train.train`.

    Build the model with :meth:`initial_mask` attached (e.g. ``MemberSpec(masks=...)``):
    the first forward pass must already see only the ``k + c`` active inputs.
    After training, :attr:`selected` holds the final ``k`` inputs.
    """

    def __init__(
        self,
        d: int,
        k: int,
        seed: int,
        first: str = "layers.0.weight",
        interval: int = INTERVAL,
        candidate_fraction: float = CANDIDATE_FRACTION,
    ) -> None:
        self.d, self.k = int(d), check_k(k, d)
        if isinstance(interval, bool) or int(interval) != interval or interval < 1:
            raise ConfigError(f"RelChaNet interval must be an integer >= 1, got {interval!r}")
        if not 0 < candidate_fraction <= 1:
            raise ConfigError(f"candidate fraction must be in (0, 1], got {candidate_fraction}")
        self.first = first
        self.interval = int(interval)
        self.c = n_candidates(d, k, candidate_fraction)
        self.gen = generator(seed)
        perm = torch.randperm(self.d, generator=self.gen)
        self.selected = torch.sort(perm[: self.k]).values
        self.candidates = torch.sort(perm[self.k : self.k + self.c]).values
        self.best = torch.full((self.d,), -math.inf, dtype=torch.float64)
        self.grad_sum: torch.Tensor | None = None
        self.updates = 0  # selection updates done
        self.history: list[list[int]] = []

    @property
    def active(self) -> torch.Tensor:
        return torch.sort(torch.cat([self.selected, self.candidates])).values

    def initial_mask(self, shape: torch.Size) -> dict[str, torch.Tensor]:
        """``{first: mask}`` with the initial selected and candidate columns."""
        if tuple(shape)[-1] != self.d:
            raise ConfigError(
                f"first layer {self.first!r} has {tuple(shape)[-1]} inputs, RelChaNet was "
                f"built for d={self.d}; build it with the model's input size"
            )
        return {self.first: column_mask(torch.Size(shape), self.active)}

    def _weight(self, model: nn.Module) -> torch.Tensor:
        module, attr = _resolve(model, self.first)
        return module.parametrizations[attr].original

    @torch.no_grad()
    def __call__(self, model: nn.Module, ctx: StepContext) -> None:
        w = self._weight(model)
        if w.grad is None:
            return
        g = w.grad.detach().to(torch.float64)
        self.grad_sum = g.clone() if self.grad_sum is None else self.grad_sum + g
        if ctx.step % self.interval == 0:
            self._update(model, ctx.optimizer)

    @torch.no_grad()
    def _update(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        active = self.active
        scores = self.grad_sum.abs().sum(dim=0).cpu()[active]
        std = scores.std(unbiased=False)
        z = (scores - scores.mean()) / std if std > 0 else torch.zeros_like(scores)
        self.best[active] = torch.maximum(self.best[active], z)
        self.grad_sum = None
        self.selected = top_k_features(self.best, self.k)
        rest = torch.ones(self.d, dtype=torch.bool)
        rest[self.selected] = False
        pool = torch.nonzero(rest).reshape(-1)
        pick = torch.randperm(pool.numel(), generator=self.gen)[: self.c]
        self.candidates = torch.sort(pool[pick]).values
        new_active = self.active
        entering = new_active[~torch.isin(new_active, active)]
        w = self._weight(model)
        mask = column_mask(w.shape, new_active).to(w.device)
        apply_masks(model, {self.first: mask}, optimizer)
        if entering.numel():
            fresh = torch.rand((w.shape[0], entering.numel()), generator=self.gen, dtype=w.dtype)
            w[:, entering.to(w.device)] = ((2 * fresh - 1) * RESET_SCALE).to(w.device)
            state = optimizer.state.get(w, {}) if optimizer is not None else {}
            for v in state.values():
                if isinstance(v, torch.Tensor) and v.shape == w.shape:
                    v[:, entering.to(w.device)] = 0
        self.updates += 1
        self.history.append(self.selected.tolist())


__all__ = [
    "CANDIDATE_FRACTION",
    "INTERVAL",
    "RelChaNet",
    "check_k",
    "column_mask",
    "magnitude_feature_scores",
    "n_candidates",
    "random_features",
    "top_k_features",
    "variance_scores",
]
