"""Dataset registry: ``load_dataset(name, device)``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from weightlab.data.digits import load_digits
from weightlab.data.mnist1d import load_mnist1d
from weightlab.data.task import TaskData
from weightlab.errors import DataError

DATASETS: dict[str, Callable[[], TaskData]] = {
    "mnist1d": load_mnist1d,
    "digits": load_digits,
}


def load_dataset(name: str, device: torch.device | str = "cpu") -> TaskData:
    """Load a registered dataset with its fixed splits, as tensors on ``device``."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]().to(device)
