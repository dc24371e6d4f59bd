"""Modular arithmetic ``a o b mod p`` (the grokking task of Power et al. 2022).

Every pair ``(a, b)`` with ``a, b`` in ``0..p-1`` (``b != 0`` for division) is one
example; input ``[onehot(a), onehot(b)]`` (``2p`` floats), label ``a o b mod p`` (``p``
classes). Operations: ``add`` ``a + b``, ``sub`` ``a - b``, ``mul`` ``a * b`` and ``div``
``a * b^(p-2)`` (the inverse of ``b`` by Fermat's little theorem; ``p`` must be prime).
A permutation of all pairs seeded with ``seed`` gives its first
``round(train_fraction * n)`` pairs to train and splits the rest evenly between val and
test (test takes the odd one). ``info["train_pairs"]`` (and ``val_pairs``,
``test_pairs``) hold each split's ``(a, b)`` as an ``(n, 2)`` int64 tensor.
"""

from __future__ import annotations

import numpy as np
import torch

from weightlab.data.params import Param
from weightlab.data.task import Split, TaskData
from weightlab.errors import DataError
from weightlab.seeding import derive_seed, generator

OPS = ("add", "sub", "mul", "div")
MAX_P = 300  # p^2 pairs x 2p floats: 216 MB at p = 300

PARAMS = (
    Param("p", "int", 97, "the modulus (prime for op=div)", min=2, max=MAX_P),
    Param("op", "str", "add", "the operation a o b", choices=OPS),
    Param("train_fraction", "float", 0.5, "fraction of all pairs used for training", gt=0, lt=1),
    Param("seed", "int", 0, "seed of the permutation of pairs", min=0),
)


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


def next_prime(n: int) -> int:
    while not is_prime(n):
        n += 1
    return n


def apply_op(a: np.ndarray, b: np.ndarray, op: str, p: int) -> np.ndarray:
    """``a o b mod p`` elementwise (int64); ``div`` multiplies by ``b^(p-2) mod p``."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if op == "add":
        return (a + b) % p
    if op == "sub":
        return (a - b) % p
    if op == "mul":
        return (a * b) % p
    inv = np.array([pow(int(v), p - 2, p) for v in range(p)], dtype=np.int64)
    return (a * inv[b]) % p


def load_modular(p: int, op: str, train_fraction: float, seed: int) -> TaskData:
    if op == "div" and not is_prime(p):
        raise DataError(
            f"task 'modular': op=div needs a prime p (every b != 0 must have an inverse); "
            f"p={p} is not prime; use p={next_prime(p)} or another op"
        )
    a, b = np.meshgrid(np.arange(p), np.arange(1 if op == "div" else 0, p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    n = len(a)
    n_train = int(round(train_fraction * n))
    n_val = (n - n_train) // 2
    if n_train < 1 or n_val < 1:
        raise DataError(
            f"task 'modular': train_fraction={train_fraction} of {n} pairs leaves "
            f"{n_train} train and {n_val} val pairs; choose a train_fraction between "
            f"{2 / n:.3g} and {1 - 2 / n:.3g} or a larger p"
        )
    perm = torch.randperm(n, generator=generator(derive_seed("modular", p, op, seed))).numpy()
    y = apply_op(a, b, op, p)
    eye = np.eye(p, dtype=np.float32)

    def split(idx: np.ndarray) -> Split:
        x = np.concatenate([eye[a[idx]], eye[b[idx]]], axis=1)
        return Split(torch.from_numpy(x), torch.from_numpy(y[idx]))

    parts = (perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :])
    info = {"p": p, "op": op, "train_fraction": train_fraction, "seed": seed}
    for name, i in zip(("train", "val", "test"), parts, strict=True):
        info[f"{name}_pairs"] = torch.from_numpy(np.stack([a[i], b[i]], axis=1))
    return TaskData("modular", *(split(i) for i in parts), p, info=info)
