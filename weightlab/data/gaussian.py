"""Binary Gaussian classification, the analytic setting of information-theoretic
generalization bounds for linear networks (He, Yu & Goldfeld 2024, row [#80]): balanced
classes ``y ∈ {0, 1}`` (alternating), ``x | y ~ N((2y − 1)·μ·e₁, I_d)``. The training and
test splits are drawn from ``generator(derive_seed("gb", "train" | "test", seed))``, an
optional validation split (``n_val``, default 0: the generalization-bounds recipe compares
train with test representations only) from ``derive_seed("gb", "val", seed)``.
"""

from __future__ import annotations

import torch

from weightlab.data.params import Param
from weightlab.data.task import Split, TaskData
from weightlab.seeding import derive_seed, generator

__all__ = ["PARAMS", "binary_gaussian_split", "load_binary_gaussian"]

PARAMS = (
    Param("n_train", "int", 40, "training examples", min=2),
    Param("n_val", "int", 0, "validation examples (0: none)", min=0),
    Param("n_test", "int", 4000, "test examples", min=2),
    Param("d", "int", 16, "input dimension", min=1),
    Param("mu", "float", 1.0, "distance of each class mean from the origin along e1", gt=0),
    Param("seed", "int", 0, "seed of both splits", min=0),
)


def binary_gaussian_split(n: int, d: int, mu: float, seed: int) -> Split:
    """``n`` examples (classes alternate, so balanced), ``x | y ~ N((2y − 1)·μ·e₁, I_d)``,
    drawn from ``generator(seed)``."""
    g = generator(seed)
    y = torch.arange(n) % 2
    mean = torch.zeros(d)
    mean[0] = mu
    x = (2 * y[:, None] - 1).float() * mean + torch.randn(n, d, generator=g)
    return Split(x, y)


def load_binary_gaussian(
    n_train: int = 40,
    n_val: int = 0,
    n_test: int = 4000,
    d: int = 16,
    mu: float = 1.0,
    seed: int = 0,
) -> TaskData:
    """The task of the module docstring."""
    val = (
        binary_gaussian_split(n_val, d, mu, derive_seed("gb", "val", seed))
        if n_val > 0
        else Split(torch.empty(0, d), torch.empty(0, dtype=torch.long))
    )
    return TaskData(
        "binary_gaussian",
        binary_gaussian_split(n_train, d, mu, derive_seed("gb", "train", seed)),
        val,
        binary_gaussian_split(n_test, d, mu, derive_seed("gb", "test", seed)),
        2,
        info={"mu": mu, "d": d, "seed": seed},
    )
