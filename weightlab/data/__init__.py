"""Datasets held as tensors on the device (no DataLoader for data that fits in memory)."""

from weightlab.data.registry import DATASETS, load_dataset
from weightlab.data.task import Split, TaskData

__all__ = ["DATASETS", "Split", "TaskData", "load_dataset"]
