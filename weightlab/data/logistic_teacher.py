"""Logistic teacher-student task: ``x ~ N(0, I_d)``, ``P(y = 1 | x) = σ(β w*ᵀx)``.

The teacher direction ``w*`` is a unit vector drawn from ``seed`` alone (a normalized
Gaussian), each split's inputs and labels from their own derived seeds, so changing a
split's size keeps the teacher and the other splits (and a longer training split extends
the shorter one: its first ``n`` examples are the same). Labels are int64 classes
``{0, 1}`` (``num_classes = 2``). ``info``: ``w_star`` (float64, ``(d,)``) and ``beta``;
the teacher's own probabilities on a split are :func:`teacher_prob`.

Used by the ``universality-lens`` recipe ("The Universality Lens: Why Even Highly
Over-Parametrized Models Learn Well", row [#26]) with ``β = 3``, ``d = 10``.
"""

from __future__ import annotations

import torch

from weightlab.data.params import Param
from weightlab.data.task import Split, TaskData
from weightlab.seeding import derive_seed, generator

PARAMS = (
    Param("n_train", "int", 256, "training examples", min=1, max=10_000_000),
    Param("n_val", "int", 256, "validation examples", min=1, max=10_000_000),
    Param("n_test", "int", 1000, "test examples", min=1, max=10_000_000),
    Param("d", "int", 10, "input dimension", min=1, max=100_000),
    Param("beta", "float", 3.0, "teacher slope β: P(y = 1 | x) = σ(β w*ᵀx)", min=0, max=1e6),
    Param("seed", "int", 0, "seed of the teacher, the inputs and the labels", min=0),
)


def teacher_prob(x: torch.Tensor, w_star: torch.Tensor, beta: float) -> torch.Tensor:
    """``σ(β w*ᵀx)`` per row of ``x`` (float64)."""
    return torch.sigmoid(beta * (x.double() @ w_star.double().to(x.device)))


def _split(n: int, d: int, w: torch.Tensor, beta: float, seed: int, name: str) -> Split:
    gx = generator(derive_seed("teacher_logistic", seed, name, "x"))
    gy = generator(derive_seed("teacher_logistic", seed, name, "y"))
    x = torch.randn((n, d), generator=gx, dtype=torch.float64)
    y = (torch.rand(n, generator=gy, dtype=torch.float64) < teacher_prob(x, w, beta)).long()
    return Split(x.float().contiguous(), y)


def load_teacher_logistic(
    n_train: int, n_val: int, n_test: int, d: int, beta: float, seed: int
) -> TaskData:
    """The task (see the module docstring); inputs float32, drawn in float64."""
    g = generator(derive_seed("teacher_logistic", seed, "w_star"))
    w = torch.randn(d, generator=g, dtype=torch.float64)
    w = w / w.norm()
    splits = [
        _split(n, d, w, beta, seed, name)
        for n, name in ((n_train, "train"), (n_val, "val"), (n_test, "test"))
    ]
    info = {"w_star": w, "beta": float(beta), "seed": int(seed)}
    return TaskData("teacher_logistic", *splits, 2, info=info)
