"""MNIST-1D shift: task A is MNIST-1D (Greydanus 2020) as the ``mnist1d`` task; task B is the
same data with its 40 input positions permuted by one fixed random permutation
(:data:`PERMUTATION_SEED`; :func:`shift_permutation`), applied to every split. The splits
are those of ``mnist1d`` (3500 train / 500 val / 1000 test), so an A model and a B model
see the same examples. A permutation destroys the spatial order a model pretrained on A
relies on (time reversal is too mild a shift for adaptation experiments).
"""

from __future__ import annotations

import torch

from weightlab.data.mnist1d import load_mnist1d
from weightlab.data.params import Param
from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator

__all__ = ["PARAMS", "PERMUTATION_SEED", "load_mnist1d_shift", "shift_permutation"]

PERMUTATION_SEED = derive_seed("mnist1d_shift", 0)  # the documented, fixed seed
LENGTH = 40
PARTS = ("A", "B")
PARAMS = (
    Param(
        "part",
        "str",
        "A",
        "A: plain MNIST-1D; B: its 40 positions permuted by the fixed permutation",
        choices=PARTS,
    ),
)


def shift_permutation() -> torch.Tensor:
    """Task B's permutation of the 40 positions:
    ``torch.randperm(40, generator=generator(derive_seed("mnist1d_shift", 0)))``;
    B's input ``x_B[:, j] = x_A[:, perm[j]]``."""
    return torch.randperm(LENGTH, generator=generator(PERMUTATION_SEED))


def load_mnist1d_shift(part: str = "A") -> TaskData:
    """MNIST-1D (``part="A"``) or its position-permuted shift (``part="B"``)."""
    if part not in PARTS:
        raise ConfigError(f"unknown mnist1d_shift part {part!r}; choose A or B")
    data = load_mnist1d()
    perm = shift_permutation() if part == "B" else torch.arange(LENGTH)
    splits = [Split(s.x[:, perm].contiguous(), s.y) for s in (data.train, data.val, data.test)]
    return TaskData(
        "mnist1d_shift",
        *splits,
        10,
        info={"part": part, "permutation": perm, "permutation_seed": PERMUTATION_SEED},
    )
