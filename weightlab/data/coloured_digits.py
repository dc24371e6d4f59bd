"""Coloured digits: scikit-learn's 8x8 digits with a spurious colour channel, built like
ColoredMNIST (Arjovsky et al. 2019, "Invariant Risk Minimization", Sec. 5.2), the benchmark
of Bonsai / Rich Feature Construction (Zhang, Bottou & Vincent 2022).

Each image (pixels 0..16 scaled to 0..1) gets a binary label ``ỹ = [digit ≥ 5]``, flipped
with probability ``label_noise`` (0.25): the shape predicts the label with 75% accuracy at
best. A colour ``c`` equals the label with probability ``agreement`` of the example's
environment and is flipped otherwise; the image is written into channel ``c`` of a
``(2, 8, 8)`` input (the other channel is zero), flattened to 128 features. Training
environments have agreements 0.9 and 0.8 (colour is the easier, more predictive
feature), the test environment 0.1 (the colour correlation is reversed).

Splits: the 1797 digits are permuted by ``seed``; 360 test, 180 validation (drawn from the
training environments, half from each), the rest training, halved into the two
environments. ``env`` holds each training example's environment (0 or 1). Every random
draw comes from ``weightlab.seeding.generator(seed)``: same seed, same data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator, preserved_global_rngs

TEST_SIZE = 360
VAL_SIZE = 180


@dataclass(frozen=True)
class ColouredDigits:
    """The task (plain binary labels in every split) plus the training environments."""

    task: TaskData
    env: torch.Tensor  # (n_train,) int64 environment of each training example
    agreements: tuple[float, ...]  # colour-label agreement of each training environment
    test_agreement: float


def _check_prob(name: str, p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"{name} must lie in [0, 1], got {p}")
    return p


def colourize(
    images: torch.Tensor, labels: torch.Tensor, agreement: torch.Tensor, g: torch.Generator
) -> torch.Tensor:
    """``(n, 64)`` images into ``(n, 128)`` two-channel inputs: colour = label with
    probability ``agreement`` (per example), else the other colour."""
    flip = torch.rand(len(labels), generator=g, dtype=torch.float64) >= agreement
    colour = labels ^ flip.long()
    out = torch.zeros(len(labels), 2, images.shape[1], dtype=images.dtype)
    out[torch.arange(len(labels)), colour] = images
    return out.flatten(1)


def load_coloured_digits(
    seed: int = 0,
    label_noise: float = 0.25,
    train_agreements: Sequence[float] = (0.9, 0.8),
    test_agreement: float = 0.1,
) -> ColouredDigits:
    """Coloured digits (see the module docstring); ``seed`` fixes split, noise and colours."""
    label_noise = _check_prob("label_noise", label_noise)
    test_agreement = _check_prob("test_agreement", test_agreement)
    agreements = tuple(_check_prob("train agreement", a) for a in train_agreements)
    if len(agreements) < 2:
        raise ConfigError(f"coloured digits need >= 2 training environments, got {len(agreements)}")
    with preserved_global_rngs():
        from sklearn.datasets import load_digits

        d = load_digits()
    x = torch.as_tensor((d.data / 16.0).astype(np.float32))
    digit = torch.as_tensor(d.target.astype(np.int64))
    g = generator(derive_seed("coloured_digits", seed))
    perm = torch.randperm(len(digit), generator=g)
    x, digit = x[perm], digit[perm]
    y = (digit >= 5).long() ^ (torch.rand(len(digit), generator=g) < label_noise).long()
    test = slice(0, TEST_SIZE)
    rest = torch.arange(TEST_SIZE, len(y))
    n_env = len(agreements)
    env_all = torch.arange(len(rest)) % n_env  # alternate: equal-sized environments
    agree = torch.tensor(agreements, dtype=torch.float64)[env_all]
    x_rest = colourize(x[rest], y[rest], agree, g)
    x_test = colourize(x[test], y[test], torch.full((TEST_SIZE,), test_agreement), g)
    val_idx, train_idx = torch.arange(VAL_SIZE), torch.arange(VAL_SIZE, len(rest))
    task = TaskData(
        "coloured_digits",
        Split(x_rest[train_idx], y[rest][train_idx]),
        Split(x_rest[val_idx], y[rest][val_idx]),
        Split(x_test, y[test]),
        2,
        info={
            "label_noise": label_noise,
            "train_agreements": list(agreements),
            "test_agreement": test_agreement,
        },
    )
    return ColouredDigits(task, env_all[train_idx].clone(), agreements, test_agreement)
