"""Which tasks a recipe's ``--data`` accepts, and loading them.

A recipe lists the registered tasks it supports in ``Recipe.tasks``; user data
(``FILE.npz`` or ``idx:DIR``, see :mod:`weightlab.data`) is accepted when the task it
loads is of a kind the recipe handles (``Recipe.kinds``). Every refusal is one line
naming the problem and the fix.
"""

from __future__ import annotations

from typing import Any

from weightlab.data import is_user_data, load_dataset, task_names, task_param_specs
from weightlab.errors import ConfigError
from weightlab.recipes.base import opt


def check_task_name(recipe: Any, name: str) -> None:
    """Refuse a task the registry does not know, or one ``recipe`` does not support."""
    if name in recipe.tasks or is_user_data(name):
        return
    supported = ", ".join(recipe.tasks)
    if name in task_names():
        raise ConfigError(
            f"--data {name}: recipe {recipe.name!r} does not support this task; "
            f"choose one of: {supported} (or user data FILE.npz / idx:DIR)"
        )
    raise ConfigError(
        f"--data {name}: unknown task; recipe {recipe.name!r} takes one of: {supported} "
        "(or user data FILE.npz / idx:DIR)"
    )


def load_task(recipe: Any, name: str, device: str, params: dict[str, Any]):
    """Load task ``name`` for ``recipe`` on ``device`` after checking it is supported."""
    check_task_name(recipe, name)
    task = load_dataset(name, device, **params)
    if task.kind not in recipe.kinds:
        raise ConfigError(
            f"--data {name} is a {task.kind} task; recipe {recipe.name!r} needs "
            f"{' or '.join(recipe.kinds)} data"
        )
    return task


def data_sizes(task: Any) -> dict[str, int]:
    """``{"train": n, "val": n, "test": n}`` of a loaded task."""
    return {"train": len(task.train), "val": len(task.val), "test": len(task.test)}


def task_opt(task: str, param: str) -> Any:
    """A recipe config field for the task parameter ``param`` of ``task``: its default,
    help and range checks come from the task's declaration, so ``--PARAM`` is checked
    before anything is written. List the field in the recipe's ``task_fields`` to pass it
    to the loader. List-valued parameters become comma-separated strings."""
    specs = {p.name: p for p in task_param_specs(task)}
    if param not in specs:
        raise ConfigError(
            f"task {task!r} has no parameter {param!r}; it has: {', '.join(specs) or 'none'}"
        )
    p = specs[param]
    default = p.default
    if p.type in ("ints", "floats") and not isinstance(default, str):
        default = ",".join(str(v) for v in default)
    return opt(default, f"{p.help} (task parameter of {task})", **p.checks())
