"""Conv residual teacher-student: a one-hidden-layer convolutional network with a shortcut
filter on Gaussian patches (Liu, Chen, Zhou, Du, Zhou & Zhao 2019, "Towards Understanding the
Importance of Shortcut Connections in Residual Networks", NeurIPS; row [#100]; the setting
of Du et al. 2017 with a residual link).

Inputs ``Z = (Z_1, …, Z_k)``, ``Z_j ~ N(0, I_p)`` independently (non-overlapping patches).
Output

    f(Z) = Σ_j a_j ReLU(Z_jᵀ v / ‖v‖),   v = s + w  (shortcut)  or  v = w  (plain),

with a fixed shortcut filter ``s`` (``𝟙/√p`` here) and trained ``a ∈ R^k``, ``w ∈ R^p``. The
teacher is the same network at ``(a*, v*)``. With the shortcut, ``w(0) = 0`` is the identity
start ``v(0) = s``; without it, ``w(0)`` is random. The paper's two-phase schedule trains
``w`` with a small learning rate first (it "remain[s] away from the spurious fixed point"
while ``a`` approaches ``a*``), then with the full one: :func:`phase_plan` states it, and
:func:`train_students` runs it as consecutive calls of the one loop
(:func:`weightlab.train.train`) with a parameter group for ``w`` (plain gradient descent has
no state, so consecutive calls are one run).

:class:`ConvResidualStudents` holds ``M`` students as one module (``a (M, k)``, ``w (M, p)``,
a shortcut buffer ``(M, p)`` that is ``s`` or ``0`` per member) on shared inputs; trained on
the sum of the members' losses (:func:`half_squared_sum`), each member follows its own
gradient-descent path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from weightlab.data.conv_teacher import conv_teacher
from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.train import train
from weightlab.train.config import OptimConfig, ParamGroup, TrainConfig

__all__ = [
    "ConvResidualStudents",
    "conv_teacher",
    "half_squared_sum",
    "member_losses",
    "phase_plan",
    "train_students",
    "uniform_ball",
]


class ConvResidualStudents(nn.Module):
    """``M`` students ``f_m(Z) = Σ_j a_mj ReLU(Z_jᵀ v_m / ‖v_m‖)``, ``v_m = s_m + w_m``.

    Args:
        a0: ``(M, k)`` initial second-layer weights; w0: ``(M, p)`` initial filters.
        shortcut: ``(M, p)`` fixed shortcut filters (a buffer; a row of zeros is a plain
            student, ``v = w``).

    ``forward(z)``: ``z (B, k, p)`` shared by all members -> ``(B, M)``.
    """

    def __init__(self, a0: torch.Tensor, w0: torch.Tensor, shortcut: torch.Tensor) -> None:
        super().__init__()
        if a0.dim() != 2 or w0.dim() != 2 or shortcut.shape != w0.shape or len(a0) != len(w0):
            raise ConfigError(
                "ConvResidualStudents needs a0 (M, k), w0 (M, p) and shortcut (M, p); got "
                f"{tuple(a0.shape)}, {tuple(w0.shape)}, {tuple(shortcut.shape)}"
            )
        self.a = nn.Parameter(a0.detach().clone())
        self.w = nn.Parameter(w0.detach().clone())
        self.register_buffer("shortcut", shortcut.detach().clone())

    @property
    def v(self) -> torch.Tensor:
        """The filters ``v = s + w``, ``(M, p)``."""
        return self.shortcut + self.w

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        v = self.v
        u = v / v.norm(dim=-1, keepdim=True)
        pre = torch.einsum("bkp,mp->bmk", z, u)
        return (torch.relu(pre) * self.a).sum(-1)


def half_squared_sum(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example ``Σ_m ½ (f_m − y_m)²`` for ``(B, M)`` predictions and targets: ``(B,)``
    (the loop's batch mean is then ``Σ_m L_m``, ``L_m = ½ E_b (f_m − y_m)²``)."""
    return 0.5 * (pred - target).square().sum(-1)


def member_losses(model: ConvResidualStudents, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``L_m = ½ mean_b (f_m − y_m)²`` per member, ``(M,)``."""
    with torch.no_grad():
        return 0.5 * (model(z) - y).square().mean(0)


def phase_plan(total_steps: int, phases: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """Check a schedule of ``(steps, w_lr_mult)`` phases: every phase at least one step and
    a multiplier >= 0, together exactly ``total_steps``. Returns it as a list; a one-line
    :class:`ConfigError` naming the mismatch otherwise."""
    plan = [(int(s), float(m)) for s, m in phases]
    if not plan:
        raise ConfigError("a schedule needs at least one phase")
    for s, m in plan:
        if s < 1:
            raise ConfigError(f"every phase needs at least one step; got {s}")
        if not (math.isfinite(m) and m >= 0):
            raise ConfigError(f"a phase's lr multiplier for w must be >= 0; got {m}")
    covered = sum(s for s, _ in plan)
    if covered != total_steps:
        raise ConfigError(
            f"the phases cover {covered} steps but training has {total_steps}; make the "
            "phase steps add up to the total"
        )
    return plan


def train_students(
    model: ConvResidualStudents,
    z: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    plan: Sequence[tuple[int, float]],
    data_seed: int = 0,
) -> None:
    """Full-batch gradient descent (SGD, lr ``lr``) on ``Σ_m ½ E_b (f_m − y_m)²``, phase by
    phase of ``plan`` (``(steps, w_lr_mult)``: ``a`` at ``lr``, ``w`` at ``lr · w_lr_mult``),
    each phase one call of :func:`weightlab.train.train` continuing from the last (plain
    gradient descent keeps no optimizer state). In place."""
    n = len(z)
    empty = Split(z[:0], y[:0])
    data = TaskData("conv-teacher", Split(z, y), empty, Split(z[:1], y[:1]), 0, "regression")
    for i, (steps, mult) in enumerate(plan):
        optim = OptimConfig("sgd", lr=lr, groups=(ParamGroup(("w",), lr_mult=mult),))
        cfg = TrainConfig(steps, n, steps, optim, loss=half_squared_sum)
        train(model, data, cfg, data_seed=data_seed + i)


def uniform_ball(m: int, k: int, radius: torch.Tensor | float, g: torch.Generator) -> torch.Tensor:
    """``m`` points uniform in the ``k``-ball of ``radius`` (per row if a tensor ``(m,)``):
    a uniform direction times ``radius · U^{1/k}``."""
    x = torch.randn(m, k, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)
    r = torch.as_tensor(radius, dtype=torch.float64).reshape(-1, 1)
    u = torch.rand(m, 1, generator=g, dtype=torch.float64)
    return (x * r * u ** (1.0 / k)).float()
