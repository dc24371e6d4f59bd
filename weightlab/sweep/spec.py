"""A sweep's specification: a recipe, fixed settings, and a grid of config values.

``weightlab sweep RECIPE --grid KEY=V1,V2 [--grid ...] [--set KEY=V] [--seeds N] [--smoke]``
or ``weightlab sweep FILE.toml`` with the same content (keys ``recipe``, ``seeds``,
``smoke``, ``out``, tables ``[set]``, ``[grid]``, ``[executor]``). Keys are the recipe's
config fields; values parse by the field's type; the grid is the Cartesian product of the
value lists, in the order given (the last key varies fastest). Every point's config is built
and checked (field range checks, then the recipe's ``validate`` hook on the loaded task)
before anything is written.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from weightlab.errors import ConfigError

EXECUTOR_KEYS = (
    "executor",
    "address",
    "cpus_per_task",
    "max_retries",
    "batch",
    "batch_members",
)
TOP_KEYS = ("recipe", "seeds", "smoke", "out", "set", "grid", "executor")
DEFAULT_BATCH_MEMBERS = 24


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs. ``grid`` keeps its keys' order (the product's order)."""

    recipe: str
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    set: tuple[tuple[str, Any], ...] = ()
    seeds: int | None = None
    smoke: bool = False
    batch: bool = True
    batch_members: int = DEFAULT_BATCH_MEMBERS
    executor: dict = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict:
        """The recorded form (``ROOT/sweeps/<id>.json``'s ``spec``)."""
        return {
            "recipe": self.recipe,
            "seeds": self.seeds,
            "smoke": self.smoke,
            "set": dict(self.set),
            "grid": {k: list(v) for k, v in self.grid},
            # JSON files here are written with sorted keys: the product's order, kept
            "grid_order": [k for k, _ in self.grid],
            "batch": self.batch,
            "batch_members": self.batch_members,
            "executor": dict(self.executor),
        }

    @classmethod
    def from_json(cls, d: dict) -> SweepSpec:
        """The spec back from :meth:`to_json` (a sweep record, or a Ray task's argument)."""
        return cls(
            recipe=d["recipe"],
            grid=tuple((k, tuple(d["grid"][k])) for k in d.get("grid_order", list(d["grid"]))),
            set=tuple(d["set"].items()),
            seeds=d["seeds"],
            smoke=d["smoke"],
            batch=d["batch"],
            batch_members=d["batch_members"],
            executor=dict(d.get("executor", {})),
        )

    @property
    def id(self) -> str:
        """Hash of what decides the runs and their batch groups (not of the executor: the
        same sweep on Ray resumes the local one's record)."""
        payload = {k: v for k, v in self.to_json().items() if k != "executor"}
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def points(self) -> list[dict[str, Any]]:
        """The grid's points in order: one ``{key: value}`` per run."""
        keys = [k for k, _ in self.grid]
        return [
            dict(zip(keys, vals, strict=True))
            for vals in itertools.product(*(v for _, v in self.grid))
        ]


def _field_types(recipe: Any) -> dict[str, Any]:
    out = {}
    for f in fields(recipe.Config):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        out[f.name] = type(default)
    return out


def _unknown_key(recipe: Any, key: str, where: str) -> ConfigError:
    names = ", ".join(f.name for f in fields(recipe.Config))
    return ConfigError(
        f"{where} key {key!r} is not a config field of recipe {recipe.name!r}; its fields: {names}"
    )


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_value(kind: type, value: Any, key: str) -> Any:
    """``value`` (CLI text or a TOML value) as the field's type, else a one-line error."""
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        try:
            if kind is bool:
                low = text.lower()
                if low not in _TRUE | _FALSE:
                    raise ValueError
                return low in _TRUE
            if kind is int:
                return int(text)
            if kind is float:
                out = float(text)
                if not math.isfinite(out):
                    raise ValueError
                return out
        except ValueError:
            raise ConfigError(f"{key} expects {kind.__name__}, got {value!r}") from None
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(f"{key} expects {kind.__name__}, got {value!r}")


def _pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        out.append((key, value))
    return out


def _check_keys(recipe: Any, grid: list[tuple[str, Any]], sets: list[tuple[str, Any]]) -> None:
    types = _field_types(recipe)
    seen: set[str] = set()
    for where, pairs in (("--grid", grid), ("--set", sets)):
        for key, _ in pairs:
            if key not in types:
                raise _unknown_key(recipe, key, where)
            if key in seen:
                raise ConfigError(
                    f"key {key!r} is given twice (in --grid/--set or [grid]/[set]); give it once"
                )
            seen.add(key)


def spec_from_args(
    recipe_name: str,
    grid: list[str],
    sets: list[str],
    seeds: int | None,
    smoke: bool,
    batch: bool = True,
    batch_members: int = DEFAULT_BATCH_MEMBERS,
    executor: dict | None = None,
) -> SweepSpec:
    """A spec from the command line's ``--grid KEY=V1,V2`` and ``--set KEY=V`` strings.
    Grid values split at commas (a value holding a comma goes in a TOML file)."""
    from weightlab.recipes.registry import get_recipe

    recipe = get_recipe(recipe_name)
    g = _pairs(grid, "--grid")
    s = _pairs(sets, "--set")
    _check_keys(recipe, g, s)
    types = _field_types(recipe)
    grid_t = []
    for key, text in g:
        parts = [p for p in (x.strip() for x in text.split(",")) if p]
        if not parts:
            raise ConfigError(f"--grid {key}= has no values; give at least one: {key}=V1,V2")
        grid_t.append((key, tuple(parse_value(types[key], p, f"--grid {key}") for p in parts)))
    set_t = tuple((k, parse_value(types[k], v, f"--set {k}")) for k, v in s)
    return _finish(recipe, tuple(grid_t), set_t, seeds, smoke, batch, batch_members, executor)


def _finish(recipe, grid, sets, seeds, smoke, batch, batch_members, executor) -> SweepSpec:
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ConfigError(f"seeds must be a positive integer, got {seeds!r}")
        if "seeds" in dict(grid) or "seeds" in dict(sets):
            raise ConfigError("seeds is given twice (--seeds and --grid/--set); give it once")
    if isinstance(batch_members, bool) or not isinstance(batch_members, int) or batch_members < 1:
        raise ConfigError(f"--batch-members must be a positive integer, got {batch_members!r}")
    for key, values in grid:
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"--grid {key} lists a value twice; list each value once")
    return SweepSpec(
        recipe=recipe.name,
        grid=grid,
        set=sets,
        seeds=seeds,
        smoke=bool(smoke),
        batch=bool(batch),
        batch_members=batch_members,
        executor=dict(executor or {}),
    )


def spec_from_toml(path: Path) -> tuple[SweepSpec, Path | None]:
    """A spec (and its ``out``, if given) from a TOML file; parse errors name line and
    column; unknown keys are refused."""
    from weightlab.recipes.registry import get_recipe

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {path} does not exist; pass a .toml file or a recipe name")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text; write the sweep file as TOML") from None
    unknown = sorted(set(doc) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(TOP_KEYS)}"
        )
    if not isinstance(doc.get("recipe"), str):
        raise ConfigError(f"{path}: 'recipe' (a recipe name) is required")
    recipe = get_recipe(doc["recipe"])
    for table in ("set", "grid", "executor"):
        if table in doc and not isinstance(doc[table], dict):
            raise ConfigError(f"{path}: [{table}] must be a table")
    ex = dict(doc.get("executor", {}))
    bad = sorted(set(ex) - set(EXECUTOR_KEYS))
    if bad:
        raise ConfigError(
            f"{path}: unknown [executor] key(s) {', '.join(bad)}; allowed: {', '.join(EXECUTOR_KEYS)}"
        )
    grid_raw = [(k.replace("-", "_"), v) for k, v in doc.get("grid", {}).items()]
    set_raw = [(k.replace("-", "_"), v) for k, v in doc.get("set", {}).items()]
    _check_keys(recipe, grid_raw, set_raw)
    types = _field_types(recipe)
    grid = []
    for key, values in grid_raw:
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: [grid] {key} must be a non-empty list of values")
        grid.append((key, tuple(parse_value(types[key], v, f"[grid] {key}") for v in values)))
    sets = tuple((k, parse_value(types[k], v, f"[set] {k}")) for k, v in set_raw)
    smoke = doc.get("smoke", False)
    if not isinstance(smoke, bool):
        raise ConfigError(f"{path}: 'smoke' must be true or false")
    out = doc.get("out")
    if out is not None and not isinstance(out, str):
        raise ConfigError(f"{path}: 'out' must be a path string")
    spec = _finish(
        recipe,
        tuple(grid),
        sets,
        doc.get("seeds"),
        smoke,
        ex.pop("batch", True),
        ex.pop("batch_members", DEFAULT_BATCH_MEMBERS),
        ex,
    )
    return spec, (Path(out) if out is not None else None)
