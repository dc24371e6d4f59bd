"""Tasks held as tensors on the device (no DataLoader for data that fits in memory).

``load_dataset(name, device, **params)`` loads a registered task (``TASKS``) or user data
(``FILE.npz``, ``idx:DIR``); see :mod:`weightlab.data.registry`.
"""

from weightlab.data.params import Param
from weightlab.data.registry import (
    DATASETS,
    TASKS,
    Task,
    describe_tasks,
    is_user_data,
    load_dataset,
    task_names,
    task_param_specs,
    task_params,
)
from weightlab.data.task import Split, TaskData

__all__ = [
    "DATASETS",
    "TASKS",
    "Param",
    "Split",
    "Task",
    "TaskData",
    "describe_tasks",
    "is_user_data",
    "load_dataset",
    "task_names",
    "task_param_specs",
    "task_params",
]
