"""A recipe's per-seed units: one resumable unit per seed, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable

from weightlab.progress import progress_bar
from weightlab.runs.rundir import RunDir


def seed_units(
    rd: RunDir,
    recipe: str,
    seeds: int,
    compute: Callable[[int], tuple[dict, dict]],
    check: Callable[[dict], None],
    progress: bool = False,
) -> list[dict]:
    """Run ``compute(s)`` as unit ``seed-<s:02d>`` for ``s`` in ``range(seeds)`` (a finished
    unit is read back, not recomputed) and return every unit's ``"members"`` records, in
    seed order. ``compute`` returns ``(metrics, tensors)`` as for :meth:`RunDir.unit`, the
    metrics holding a ``"members"`` list; ``check`` shape-checks metrics read back."""
    records: list[dict] = []
    bar = progress_bar(seeds, recipe, "seed", progress, line_each_update=True)
    for s in range(seeds):
        metrics, _ = rd.unit(f"seed-{s:02d}", lambda s=s: compute(s), check=check)
        records.extend(metrics["members"])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return records
