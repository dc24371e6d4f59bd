"""Hebbian pattern retrieval as a classification task (rows [#42], [#86]).

``K`` random patterns of ``N`` ±1 spins (each entry 0 with probability ``dilution``,
:func:`weightlab.dynamics.hebbian.random_patterns`); an example is one pattern, its zeros
set to +1, with exactly ``round(flip · N)`` spins flipped
(:func:`weightlab.dynamics.hebbian.corrupt`); its label is the pattern's index. The
``dense-hebbian`` and ``hebbian-multitasking`` recipes draw their own patterns per cell and
read only this task's sizes; ``info["patterns"]`` holds the ``(K, N)`` patterns.
"""

from __future__ import annotations

import torch

from weightlab.data.params import Param
from weightlab.data.task import Split, TaskData
from weightlab.errors import DataError
from weightlab.seeding import derive_seed, generator

MAX_ELEMENTS = 100_000_000

PARAMS = (
    Param("n", "int", 100, "spins N per pattern", min=1),
    Param("k", "int", 10, "number of patterns K (classes)", min=1),
    Param("dilution", "float", 0.0, "probability d that a pattern entry is 0", min=0, lt=1),
    Param("flip", "float", 0.1, "fraction of spins flipped in every example", min=0, max=1),
    Param("n_train", "int", 1000, "training examples", min=1),
    Param("n_val", "int", 200, "validation examples", min=1),
    Param("n_test", "int", 1000, "test examples", min=1),
    Param("seed", "int", 0, "seed of the patterns and the examples", min=0),
)


def load_hebbian(
    n: int,
    k: int,
    dilution: float,
    flip: float,
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int,
) -> TaskData:
    from weightlab.dynamics.hebbian import corrupt, random_patterns

    total = (n_train + n_val + n_test + k) * n
    if total > MAX_ELEMENTS:
        raise DataError(
            f"task 'hebbian': (n_train + n_val + n_test + k) * n = {total:,} values is too "
            f"large (limit {MAX_ELEMENTS:,}); lower the split sizes or n"
        )
    xi = random_patterns(k, n, generator(derive_seed("hebbian", seed, "patterns")), dilution)

    def split(size: int, part: str) -> Split:
        g = generator(derive_seed("hebbian", seed, part))
        y = torch.randint(0, k, (size,), generator=g)
        return Split(corrupt(xi[y], flip, g).to(torch.float32), y)

    return TaskData(
        "hebbian",
        split(n_train, "train"),
        split(n_val, "val"),
        split(n_test, "test"),
        k,
        info={"patterns": xi.to(torch.float32)},
    )
