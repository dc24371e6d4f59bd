"""Container for a supervised task: train / validation / test splits as tensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from weightlab.seeding import generator


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (float32) and integer labels ``y`` of one split."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class TaskData:
    """A classification task with fixed, deterministic splits."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.train.x.device

    def to(self, device: torch.device | str) -> TaskData:
        return TaskData(
            self.name,
            self.train.to(device),
            self.val.to(device),
            self.test.to(device),
            self.num_classes,
        )


def split_train_val(
    x: np.ndarray, y: np.ndarray, val_size: int, split_seed: int
) -> tuple[Split, Split]:
    """Split arrays into train/val by a seeded permutation (same seed, same split)."""
    perm = torch.randperm(len(y), generator=generator(split_seed)).numpy()
    val_idx, train_idx = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    return _split(x[train_idx], y[train_idx]), _split(x[val_idx], y[val_idx])


def _split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(
        torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32),
        torch.as_tensor(np.ascontiguousarray(y), dtype=torch.long),
    )


def make_split(x: np.ndarray, y: np.ndarray) -> Split:
    """A :class:`Split` from NumPy arrays (float32 inputs, int64 labels)."""
    return _split(x, y)
