"""A finished run directory as what a tracker logs: params, scalar points, tags, files.

Reads only the run's files (``config.json``, ``summary.json``, ``metrics.jsonl``) with the
standard library; neither torch nor a tracking package is imported here.

``metrics.jsonl`` holds one JSON object per finished unit, in unit order
(:class:`weightlab.runs.rundir.RunDir`): ``{"unit": key, ...the unit's metrics...}``. It is
read line by line and every finite number in it (booleans are not numbers) becomes one
point ``(key, value, step)``:

* a list of records that each carry an integer ``step`` (a training history such as
  ``members[i].history`` or ``probes``) is a time series: each other number of a record is
  logged as ``units/<unit>/<path>.<field>`` at that record's ``step``;
* a list of plain numbers (a per-step loss curve, say) is logged as
  ``units/<unit>/<path>`` at step = its position in the list;
* any other number is logged as ``units/<path>`` at step = the line's position in the
  file (the unit's index), so a quantity every unit reports (``members.0.final_test_acc``
  per pruning round) is one curve over units.

Paths join dict keys and list indices with ``.``. The summary's flat ``metrics``
(:meth:`weightlab.recipes.base.Recipe.metrics`) keep their names (``a.dense``) and are
logged at :attr:`TrackedRun.last_step`, the largest step of any point (0 without points).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightlab.errors import RunFileError

# MLflow accepts alphanumerics, "_", "-", ".", " ", ":" and "/" in metric, param and tag
# keys (at most 250 characters); TensorBoard takes any tag. One rule serves both.
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]")
MAX_KEY = 250

# The files a run's report needs, logged as artifacts (when present).
ARTIFACTS = ("report.md", "summary.json", "config.json")


@dataclass
class TrackedRun:
    """What a tracker logs for one finished run (see the module docstring)."""

    run_id: str  # the run directory's name
    recipe: str
    config: dict[str, Any]
    non_default: dict[str, Any]
    points: list[tuple[str, float, int]]  # (key, value, step) from metrics.jsonl, file order
    summary_metrics: dict[str, float]
    verdicts: dict[str, str]  # claim id -> held / did not hold / not tested
    statements: dict[str, str]  # claim id -> statement
    details: dict[str, str]  # claim id -> detail (the deciding numbers)
    artifacts: list[Path] = field(default_factory=list)
    sweep: str | None = None  # batch.json's sweep id and group, for a run of a sweep
    batch_group: str | None = None

    @property
    def last_step(self) -> int:
        return max((s for _, _, s in self.points), default=0)

    def params(self) -> dict[str, str]:
        """The config as string parameters (lists and ``None`` in JSON)."""
        return {
            clean_key(k): v if isinstance(v, str) else json.dumps(v) for k, v in self.config.items()
        }

    def tags(self) -> dict[str, str]:
        """``claim.<id>`` = verdict for every claim, in the summary's order; for a run of
        a sweep also ``weightlab.sweep`` and ``weightlab.batch_group``."""
        tags = {clean_key(f"claim.{cid}"): v for cid, v in self.verdicts.items()}
        if self.sweep is not None:
            tags["weightlab.sweep"] = self.sweep
        if self.batch_group is not None:
            tags["weightlab.batch_group"] = self.batch_group
        return tags


def clean_key(key: str) -> str:
    """``key`` with characters MLflow refuses replaced by ``_``; a key longer than 250
    characters keeps its first 239 and a 10-character hash of the whole."""
    key = _BAD_KEY_CHARS.sub("_", key)
    if len(key) > MAX_KEY:
        key = key[: MAX_KEY - 11] + "~" + hashlib.sha1(key.encode()).hexdigest()[:10]
    return key


def _seg(key: Any) -> str:
    """One path segment (a JSON key or a unit key): ``/`` separates segments, so it may
    not appear inside one."""
    return str(key).replace("/", "_")


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _is_step_series(v: Any) -> bool:
    return (
        isinstance(v, list)
        and len(v) > 0
        and all(
            isinstance(r, dict)
            and isinstance(r.get("step"), int)
            and not isinstance(r.get("step"), bool)
            for r in v
        )
    )


def _is_number_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_number(x) is not None for x in v)


def _leaves(obj: Any, path: str) -> Iterator[tuple[str, float]]:
    """Every finite number below ``obj`` with its dotted path."""
    n = _number(obj)
    if n is not None:
        yield path, n
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{path}.{_seg(k)}" if path else _seg(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{path}.{i}" if path else str(i))


def line_points(line: dict, index: int) -> Iterator[tuple[str, float, int]]:
    """The points of one ``metrics.jsonl`` line (the ``index``-th unit)."""
    unit = _seg(line.get("unit", index))
    body = {k: v for k, v in line.items() if k != "unit"}

    def walk(obj: Any, path: str) -> Iterator[tuple[str, float, int]]:
        if _is_step_series(obj):
            for rec in obj:
                for p, v in _leaves({k: x for k, x in rec.items() if k != "step"}, path):
                    yield f"units/{unit}/{p}", v, rec["step"]
        elif _is_number_list(obj):
            for i, x in enumerate(obj):
                yield f"units/{unit}/{path}", float(x), i
        elif isinstance(obj, dict):
            for k, v in obj.items():
                yield from walk(v, f"{path}.{_seg(k)}" if path else _seg(k))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                yield from walk(v, f"{path}.{i}" if path else str(i))
        else:
            n = _number(obj)
            if n is not None:
                yield f"units/{path}", n, index

    for key, value, step in walk(body, ""):
        yield clean_key(key), value, step


def read_points(path: Path) -> list[tuple[str, float, int]]:
    """Every point of a ``metrics.jsonl`` file, read line by line (none if it is absent:
    a recipe without units)."""
    points: list[tuple[str, float, int]] = []
    if not path.exists():
        return points
    try:
        with open(path, encoding="utf-8") as f:
            for i, text in enumerate(f):
                if not text.strip():
                    continue
                try:
                    line = json.loads(text)
                except json.JSONDecodeError as e:
                    raise RunFileError(
                        f"{path} line {i + 1} is not JSON ({e.msg}); re-run the run to rebuild it"
                    ) from None
                if not isinstance(line, dict):
                    raise RunFileError(
                        f"{path} line {i + 1} is not a JSON object; re-run the run to rebuild it"
                    )
                points.extend(line_points(line, i))
    except OSError as e:
        raise RunFileError(f"cannot read {path} ({e.strerror}); check its permissions") from None
    return points


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFileError(
            f"{path.parent} has no {path.name}: {what}; log only a finished run directory"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFileError(f"{path} is unreadable ({e}); re-run the run to rebuild it") from None


def _batch(path: Path) -> dict[str, str]:
    """``batch.json``'s string ``sweep`` and ``group`` (none if absent or unreadable: they
    are labels, not needed to log the run)."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(rec, dict):
        return {}
    return {k: rec[k] for k in ("sweep", "group") if isinstance(rec.get(k), str)}


def read_run(run_dir: Path) -> TrackedRun:
    """A finished run directory (it has ``summary.json``) as a :class:`TrackedRun`;
    :class:`~weightlab.errors.RunFileError` naming the file otherwise."""
    run_dir = Path(run_dir)
    rec = _read_json(run_dir / "config.json", "not a run directory")
    summary = _read_json(run_dir / "summary.json", "the run has not finished")
    if not (
        isinstance(rec, dict)
        and isinstance(rec.get("recipe"), str)
        and isinstance(rec.get("config"), dict)
    ):
        raise RunFileError(
            f"{run_dir / 'config.json'} lacks recipe/config; re-run the run to rebuild it"
        )
    if not isinstance(summary, dict) or not isinstance(summary.get("claims", []), list):
        raise RunFileError(f"{run_dir / 'summary.json'} is not a summary; re-run the run")
    metrics = summary.get("metrics") or {}
    summary_metrics = {
        clean_key(_seg(k)): n for k, v in metrics.items() if (n := _number(v)) is not None
    }
    verdicts, statements, details = {}, {}, {}
    for c in summary.get("claims", []):
        if isinstance(c, dict) and "id" in c:
            cid = str(c["id"])
            verdicts[cid] = str(c.get("verdict", ""))
            statements[cid] = str(c.get("statement", ""))
            details[cid] = str(c.get("detail", ""))
    batch = _batch(run_dir / "batch.json")
    return TrackedRun(
        sweep=batch.get("sweep"),
        batch_group=batch.get("group"),
        run_id=run_dir.name,
        recipe=rec["recipe"],
        config=rec["config"],
        non_default=rec.get("non_default") or {},
        points=read_points(run_dir / "metrics.jsonl"),
        summary_metrics=summary_metrics,
        verdicts=verdicts,
        statements=statements,
        details=details,
        artifacts=[run_dir / n for n in ARTIFACTS if (run_dir / n).is_file()]
        + sorted(run_dir.glob("*.png")),
    )
