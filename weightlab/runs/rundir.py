"""Run directories: named by recipe + a hash of the non-default config, resumable.

Layout::

    runs/<recipe>-<hash>/
        config.json       the full config (and which fields differ from defaults)
        units/<key>.json  one finished unit of work (metrics); written last, atomically
        units/<key>.safetensors  that unit's tensors (masks, weights), if any
        metrics.jsonl     every unit's metrics in order, rebuilt after each unit
        summary.json      per arm/density statistics and claim verdicts
        report.md, report.html, *.png

A unit is finished iff its ``.json`` exists. Re-running the same command skips
finished units, so a run killed at any point (even SIGKILL) resumes and ends with the
same ``summary.json`` as one never interrupted: every unit draws its randomness from
its own seeds, never from state left by earlier units.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from weightlab.errors import RunFileError
from weightlab.runs.files import (
    atomic_write_json,
    atomic_write_text,
    dumps_json,
    load_tensors,
    read_json,
    remove_stale_temp_files,
    save_tensors,
)
from weightlab.runs.schema import check_config, check_unit

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Set while a sweep's batch group runs (weightlab.sweep.batching): ``unit_gate(key)`` says
# whether a finished unit may be reused; False recomputes it with the whole group.
unit_gate: Callable[[str], bool] | None = None


def non_default_fields(config: Any) -> dict[str, Any]:
    """The dataclass fields of ``config`` whose values differ from the defaults."""
    default = type(config)()
    return {
        f.name: getattr(config, f.name)
        for f in fields(config)
        if getattr(config, f.name) != getattr(default, f.name)
    }


def config_hash(recipe: str, config: Any) -> str:
    """Short stable hash of the recipe name and its non-default config."""
    payload = json.dumps(
        {"recipe": recipe, "config": non_default_fields(config)}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def default_run_dir(root: Path, recipe: str, config: Any) -> Path:
    return Path(root) / f"{recipe}-{config_hash(recipe, config)}"


class RunDir:
    """A run directory with unit-level resume."""

    def __init__(self, path: Path, recipe: str, config: Any) -> None:
        self.path = Path(path)
        self.recipe = recipe
        self.config = config
        self.units_dir = self.path / "units"
        self._metric_lines: list[str] = []  # metrics.jsonl so far, one JSON line per unit
        self.computed: list[str] = []

    # -- creation and validation -------------------------------------------------
    def open(self) -> RunDir:
        """Create the directory (or verify it belongs to the same recipe and config)."""
        cfg_path = self.path / "config.json"
        if self.path.exists() and not self.path.is_dir():
            raise RunFileError(f"{self.path} is a file, not a run directory; choose another --out")
        record = {
            "recipe": self.recipe,
            "config": asdict(self.config),
            "non_default": non_default_fields(self.config),
        }
        text = dumps_json(record)
        record = json.loads(text)  # the JSON-normalized form, as read back on resume
        if cfg_path.exists():
            existing = check_config(read_json(cfg_path, "run config"), cfg_path)
            if existing.get("recipe") != self.recipe or existing.get("config") != record["config"]:
                raise RunFileError(
                    f"{self.path} holds a run of {existing.get('recipe')!r} with another config; "
                    "choose another --out directory or delete that one"
                )
        elif self.path.exists() and any(self.path.iterdir()):
            raise RunFileError(
                f"{self.path} exists and is not a weightlab run directory; choose another --out"
            )
        self.created = not cfg_path.exists()
        # Whether the folder itself is ours: a user's (empty) --out must survive a failed run.
        self.created_dir = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        self.units_dir.mkdir(exist_ok=True)
        if not cfg_path.exists():
            atomic_write_text(cfg_path, text)
        remove_stale_temp_files(self.path)
        remove_stale_temp_files(self.units_dir)
        return self

    def discard_if_empty(self) -> bool:
        """Undo :meth:`open` if no unit finished (after a user error found only once the run
        started, e.g. a batch larger than the data), so a corrected command does not meet a
        stale config. Only what this process created goes: the run's files, and the folder
        itself only if :meth:`open` made it (an existing empty ``--out`` stays, empty).
        Returns whether anything was removed."""
        if not getattr(self, "created", False) or any(self.units_dir.glob("*.json")):
            return False
        for p in sorted(self.path.rglob("*"), key=lambda p: -len(p.parts)):
            p.rmdir() if p.is_dir() else p.unlink()
        if self.created_dir:
            self.path.rmdir()
        return True

    # -- units -------------------------------------------------------------------
    def unit_done(self, key: str) -> bool:
        return (self.units_dir / f"{key}.json").exists()

    def unit(
        self,
        key: str,
        compute: Callable[[], tuple[dict, dict[str, torch.Tensor]]],
        device: str | torch.device = "cpu",
        check: Callable[[dict], Any] | None = None,
    ) -> tuple[dict, dict[str, torch.Tensor]]:
        """Return the unit ``key``'s ``(metrics, tensors)``, computing and saving it if needed.

        Tensors are written first, the metrics JSON last: a unit killed between the two
        is simply recomputed. ``check(metrics)`` validates a unit read back from disk
        (raise ``ValueError`` naming the problem); a bad file is a one-line
        :class:`RunFileError` naming it. ``self.computed`` lists the keys computed here.
        A computed unit returns its tensors as read back from the file, so a resumed run
        continues from exactly the numbers a fresh one does.
        """
        if not _KEY.match(key):
            raise ValueError(f"bad unit key {key!r}")
        jpath, tpath = self.units_dir / f"{key}.json", self.units_dir / f"{key}.safetensors"
        if jpath.exists() and (unit_gate is None or unit_gate(key)):
            record = check_unit(read_json(jpath, "unit file"), jpath, check)
            try:
                tensors = load_tensors(tpath, device) if record.get("has_tensors") else {}
            except RunFileError as e:
                # The unit counts as finished while its .json exists, so deleting only the
                # tensor file would not recompute it: name both files.
                raise RunFileError(
                    f"tensor file {tpath} of unit {key!r} is missing, unreadable or corrupt; "
                    f"delete {jpath} and {tpath} and re-run to recompute the unit"
                ) from e
            metrics = record["metrics"]
        else:
            metrics, tensors = compute()
            self.computed.append(key)
            if tensors:
                save_tensors(tpath, tensors)
                # hand back what a resumed run reads: same dtype, device and fresh aligned
                # storage (BLAS rounds differently on unaligned views; resumed == fresh)
                tensors = load_tensors(tpath, device)
            text = dumps_json({"key": key, "metrics": metrics, "has_tensors": bool(tensors)})
            atomic_write_text(jpath, text)
            record = json.loads(text)
            metrics = record["metrics"]  # the JSON-normalized form (NaN -> null), as on resume
        self._metric_lines.append(json.dumps({"unit": key, **metrics}, sort_keys=True) + "\n")
        atomic_write_text(self.path / "metrics.jsonl", "".join(self._metric_lines))
        return metrics, tensors

    # -- outputs -------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.path / name, text)
