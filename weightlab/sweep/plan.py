"""From a spec to runs and batch groups, all checked before anything is written.

Each grid point is an ordinary run: its config is ``make_config(recipe, smoke, **set,
**point)`` and its directory ``ROOT/<recipe>-<hash>``, the one ``weightlab run`` of that
config uses. Runs that differ only in the recipe's member-level fields
(:attr:`~weightlab.recipes.base.Recipe.member_fields`) form batch groups, packed in grid
order until a group's members per ``train_members`` call (``Recipe.members_per_call``)
would pass ``batch_members``; a run that large trains alone. Groups are a pure function
of the spec.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from weightlab.errors import ConfigError
from weightlab.recipes.registry import get_recipe
from weightlab.recipes.runner import make_config
from weightlab.recipes.tasks import data_sizes
from weightlab.runs.rundir import default_run_dir, non_default_fields
from weightlab.sweep.spec import SweepSpec


@dataclass
class PlannedRun:
    index: int
    name: str  # the run directory's name
    path: Path
    point: dict[str, Any]
    cfg: Any
    group: str = ""


@dataclass
class Plan:
    spec: SweepSpec
    root: Path
    runs: list[PlannedRun]
    groups: list[tuple[str, list[int]]]  # (group id, run indices)

    @property
    def record_path(self) -> Path:
        return self.root / "sweeps" / f"{self.spec.id}.json"

    def record(self) -> dict:
        """``ROOT/sweeps/<id>.json``: spec, runs (point, non-default config, group), groups."""
        return {
            "format": 1,
            "id": self.spec.id,
            "spec": self.spec.to_json(),
            "runs": [
                {
                    "run": r.name,
                    "point": r.point,
                    "non_default": json.loads(json.dumps(non_default_fields(r.cfg), default=str)),
                    "group": r.group,
                }
                for r in self.runs
            ],
            "groups": [
                {"id": gid, "runs": [self.runs[i].name for i in idx]} for gid, idx in self.groups
            ],
        }


def _describe(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items()) or "(no grid)"


def plan_sweep(spec: SweepSpec, root: Path) -> Plan:
    """Every point's config, checked (range checks, then the recipe's ``validate`` on its
    task), its run directory, and the batch groups. Raises a one-line error naming the
    grid point; writes nothing."""
    recipe = get_recipe(spec.recipe)
    fixed = dict(spec.set)
    if spec.seeds is not None:
        fixed["seeds"] = spec.seeds
    runs = []
    for i, point in enumerate(spec.points()):
        try:
            cfg = make_config(spec.recipe, smoke=spec.smoke, **fixed, **point)
            recipe.validate(cfg, data_sizes(recipe.load_data(cfg)))
        except ConfigError as e:
            raise ConfigError(f"grid point {_describe(point)}: {e}") from None
        path = default_run_dir(root, recipe.name, cfg)
        runs.append(PlannedRun(i, path.name, path, point, cfg))
    groups = batch_groups(recipe, [r.cfg for r in runs], spec.batch, spec.batch_members)
    for gid, idx in groups:
        for i in idx:
            runs[i].group = gid
    return Plan(spec, Path(root), runs, groups)


def batch_groups(
    recipe: Any, configs: list[Any], batch: bool, cap: int
) -> list[tuple[str, list[int]]]:
    """Group ids and members, in order of each group's first run."""
    member = set(recipe.member_fields)
    if not batch or not member:
        return [(f"g{i:02d}", [i]) for i in range(len(configs))]
    open_groups: dict[str, tuple[list[int], int]] = {}  # class key -> (runs, members)
    ordered: list[list[int]] = []
    for i, cfg in enumerate(configs):
        key = json.dumps(
            {k: v for k, v in asdict(cfg).items() if k not in member}, sort_keys=True, default=str
        )
        size = max(1, int(recipe.members_per_call(cfg)))
        if size >= cap:
            ordered.append([i])
            continue
        cur = open_groups.get(key)
        if cur is None or cur[1] + size > cap:
            runs: list[int] = [i]
            ordered.append(runs)
            open_groups[key] = (runs, size)
        else:
            cur[0].append(i)
            open_groups[key] = (cur[0], cur[1] + size)
    return [(f"g{j:02d}", idx) for j, idx in enumerate(ordered)]
