"""Container for a supervised task: train / validation / test splits as tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from weightlab.data.splits import partition
from weightlab.errors import DataError

KINDS = ("classification", "regression")


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (float) and targets ``y`` of one split: int64 class labels
    (classification) or float targets of any shape ``(n, *output_shape)`` (regression)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class TaskData:
    """A supervised task with fixed, deterministic splits.

    Args:
        kind: ``"classification"`` (``y`` int64 labels in ``[0, num_classes)``, model
            outputs ``(B, num_classes)`` logits) or ``"regression"`` (``y`` float
            ``(n, *output_shape)``; ``num_classes`` is 0).
        output_shape: shape of one model output; defaults to ``(num_classes,)`` for
            classification and ``y.shape[1:]`` for regression.
        info: task facts for recipes and probes (e.g. a teacher's weights), JSON-able
            scalars or tensors; never used by training.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    kind: str = "classification"
    output_shape: tuple[int, ...] | None = None
    info: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"task kind must be one of {KINDS}, got {self.kind!r}")
        if self.output_shape is None:
            shape = (self.num_classes,) if self.kind == "classification" else self.train.y.shape[1:]
            object.__setattr__(self, "output_shape", tuple(int(d) for d in shape))

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"

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
            self.kind,
            self.output_shape,
            self.info,
        )


def split_train_val(
    x: np.ndarray, y: np.ndarray, val_size: int, split_seed: int
) -> tuple[Split, Split]:
    """Split arrays into train/val by a seeded permutation (same seed, same split)."""
    val_idx, train_idx = partition(len(y), [val_size, len(y) - val_size], split_seed)
    return _split(x[train_idx], y[train_idx]), _split(x[val_idx], y[val_idx])


def _split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(
        torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32),
        torch.as_tensor(np.ascontiguousarray(y), dtype=torch.long),
    )


def make_split(x: np.ndarray, y: np.ndarray) -> Split:
    """A :class:`Split` from NumPy arrays (float32 inputs, int64 labels)."""
    return _split(x, y)


def make_regression_split(x: np.ndarray, y: np.ndarray) -> Split:
    """A regression :class:`Split` from NumPy arrays (float32 inputs and targets)."""
    return Split(
        torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32),
        torch.as_tensor(np.ascontiguousarray(y), dtype=torch.float32),
    )
