"""XOR cluster data with label-flip noise (Xu, Wang, Frei, Vardi & Hu 2023, "Benign
Overfitting and Grokking in ReLU Networks for XOR Cluster Data"; methods row #45).

Two orthogonal means of equal norm, ``mu1 = mu * e1`` and ``mu2 = mu * e2`` (the noise
is isotropic, so the choice of the two coordinate axes loses no generality). Each
example picks one of the four cluster means ``+-mu1, +-mu2`` uniformly and adds
``N(0, I_d)`` noise; its clean label is class 0 for the ``+-mu1`` clusters and class 1
for ``+-mu2`` (the paper's labels +1 / -1), so no linear classifier beats chance.
Training labels are flipped independently with probability ``flip``; val/test labels
with probability ``eval_flip`` (default 0: clean, so test accuracy is measured against
the Bayes-optimal rule). ``info``: ``mu1``, ``mu2``, ``train_clean_y`` and
``train_flipped`` (which training labels were flipped).

Defaults follow the row's setting (``d = 2000``, ``n = 100``, 10% flipped) with
``mu = 20`` (about ``d ** 0.4``): smaller than the noise norm ``sqrt(d) ~ 45``, yet 20
noise standard deviations along its own axis, so the Bayes-optimal rule is nearly exact.
"""

from __future__ import annotations

import torch

from weightlab.data.params import Param
from weightlab.data.task import Split, TaskData
from weightlab.errors import DataError
from weightlab.seeding import derive_seed, generator

MAX_ELEMENTS = 200_000_000

PARAMS = (
    Param("n_train", "int", 100, "training examples", min=1),
    Param("n_val", "int", 1000, "validation examples", min=1),
    Param("n_test", "int", 1000, "test examples", min=1),
    Param("d", "int", 2000, "input dimension", min=2),
    Param("mu", "float", 20.0, "norm of each cluster mean", gt=0),
    Param("flip", "float", 0.1, "probability that a training label is flipped", min=0, max=1),
    Param("eval_flip", "float", 0.0, "probability that a val/test label is flipped", min=0, max=1),
    Param("seed", "int", 0, "seed of the samples and the flips", min=0),
)


def _draw(n: int, d: int, mu: float, flip: float, *parts: object):
    g = generator(derive_seed("xor", *parts))
    cluster = torch.randint(0, 4, (n,), generator=g)  # 0: +mu1, 1: -mu1, 2: +mu2, 3: -mu2
    x = torch.randn((n, d), generator=g)
    sign = 1.0 - 2.0 * (cluster % 2).float()
    axis = cluster // 2
    x[torch.arange(n), axis] += sign * mu
    clean = axis.long()
    flipped = torch.rand(n, generator=g) < flip
    return x, torch.where(flipped, 1 - clean, clean), clean, flipped


def load_xor(
    n_train: int,
    n_val: int,
    n_test: int,
    d: int,
    mu: float,
    flip: float,
    eval_flip: float,
    seed: int,
) -> TaskData:
    total = (n_train + n_val + n_test) * d
    if total > MAX_ELEMENTS:
        raise DataError(
            f"task 'xor': (n_train + n_val + n_test) * d = {total:,} values is too large "
            f"(limit {MAX_ELEMENTS:,}); lower the split sizes or d"
        )
    x, y, clean, flipped = _draw(n_train, d, mu, flip, seed, "train")
    xv, yv, _, _ = _draw(n_val, d, mu, eval_flip, seed, "val")
    xt, yt, _, _ = _draw(n_test, d, mu, eval_flip, seed, "test")
    mu1 = torch.zeros(d)
    mu1[0] = mu
    mu2 = torch.zeros(d)
    mu2[1] = mu
    info = {
        "mu1": mu1,
        "mu2": mu2,
        "train_clean_y": clean,
        "train_flipped": flipped,
        "flip": flip,
        "eval_flip": eval_flip,
    }
    return TaskData("xor", Split(x, y), Split(xv, yv), Split(xt, yt), 2, info=info)
