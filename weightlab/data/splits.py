"""Deterministic split helpers: seeded partitions, stratified splits, standardization.

Every permutation comes from :func:`weightlab.seeding.generator`, never a global RNG.
Indices inside each split are returned sorted, so a split keeps the source order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from weightlab.seeding import generator


def partition(n: int, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Cut one seeded permutation of ``range(n)`` into consecutive parts of ``sizes``
    (the last part takes whatever is left when ``sum(sizes) < n``)."""
    perm = torch.randperm(n, generator=generator(seed)).numpy()
    bounds = np.cumsum([0, *sizes])
    parts = [np.sort(perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    if bounds[-1] < n:
        parts[-1] = np.sort(np.concatenate([parts[-1], perm[bounds[-1] :]]))
    return parts


def stratified_split(
    y: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train / val / test indices holding ``fractions`` of every class.

    One generator seeded with ``seed`` permutes each class in turn (classes in sorted
    order); a class of ``n_c`` examples gives ``round(f_train * n_c)`` to train,
    ``round(f_val * n_c)`` to val and the rest to test.
    """
    g = generator(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        perm = idx[torch.randperm(len(idx), generator=g).numpy()]
        n_tr = int(round(fractions[0] * len(idx)))
        n_va = int(round(fractions[1] * len(idx)))
        parts[0].append(perm[:n_tr])
        parts[1].append(perm[n_tr : n_tr + n_va])
        parts[2].append(perm[n_tr + n_va :])
    return tuple(np.sort(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


def standardize(
    train: np.ndarray, *others: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Features scaled to zero mean and unit standard deviation with the *train* split's
    statistics (population std; a constant feature is only centred). Returns the scaled
    arrays (train first), the mean and the std used."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [(a - mean) / std for a in (train, *others)], mean, std
