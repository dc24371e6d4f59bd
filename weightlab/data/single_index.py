"""A centred single-ReLU teacher (the noisy teacher-student regression of Montanari &
Urbani 2025, "Dynamical Decoupling of Generalization and Overfitting in Large Two-Layer
Networks"; methods row #98).

``x ~ N(0, I_d)``, ``y = ReLU(w*ᵀx) − 1/√(2π) + ε``: ``w*`` a seeded unit vector, so
``w*ᵀx ~ N(0, 1)`` and the subtracted ``E[ReLU(z)] = 1/√(2π)`` centres the target
(``Var = 1/2 − 1/(2π) ≈ 0.341``: the test error of the zero predictor). Training targets
carry ``ε ~ N(0, noise²)``; val/test targets ``N(0, eval_noise²)`` (default 0: clean, so
the test MSE is the excess risk). ``info``: ``w_star`` (float32 ``(d,)``), ``noise``,
``eval_noise``. The teacher comes from the seed alone; each split has its own derived seed.
"""

from __future__ import annotations

import math

import torch

from weightlab.data.params import Param
from weightlab.data.task import Split, TaskData
from weightlab.errors import DataError
from weightlab.seeding import derive_seed, generator

MAX_ELEMENTS = 200_000_000
CENTRE = 1.0 / math.sqrt(2.0 * math.pi)  # E[ReLU(z)], z ~ N(0, 1)

PARAMS = (
    Param("n_train", "int", 1000, "training examples", min=1),
    Param("n_val", "int", 500, "validation examples", min=1),
    Param("n_test", "int", 2000, "test examples", min=1),
    Param("d", "int", 50, "input dimension", min=1),
    Param("noise", "float", 0.5, "standard deviation of the training-label noise", min=0),
    Param("eval_noise", "float", 0.0, "standard deviation of the val/test-label noise", min=0),
    Param("seed", "int", 0, "seed of the teacher, the inputs and the noise", min=0),
)


def teacher_relu_target(x: torch.Tensor, w_star: torch.Tensor) -> torch.Tensor:
    """The noiseless target ``ReLU(x w*) − 1/√(2π)``, shape ``(n, 1)``."""
    return torch.relu(x @ w_star)[:, None] - CENTRE


def load_teacher_relu(
    n_train: int, n_val: int, n_test: int, d: int, noise: float, eval_noise: float, seed: int
) -> TaskData:
    total = (n_train + n_val + n_test) * d
    if total > MAX_ELEMENTS:
        raise DataError(
            f"task 'teacher_relu': (n_train + n_val + n_test) * d = {total:,} values is too "
            f"large (limit {MAX_ELEMENTS:,}); lower the split sizes or d"
        )
    w = torch.randn(d, generator=generator(derive_seed("teacher_relu", seed, "w")))
    w_star = w / w.norm()
    splits = []
    for split, n, sd in (
        ("train", n_train, noise),
        ("val", n_val, eval_noise),
        ("test", n_test, eval_noise),
    ):
        g = generator(derive_seed("teacher_relu", seed, split))
        x = torch.randn((n, d), generator=g)
        y = teacher_relu_target(x, w_star) + sd * torch.randn((n, 1), generator=g)
        splits.append(Split(x, y))
    info = {"w_star": w_star, "noise": noise, "eval_noise": eval_noise, "seed": seed}
    return TaskData("teacher_relu", *splits, 0, kind="regression", info=info)
