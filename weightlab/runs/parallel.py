"""Independent run units computed in worker processes, recorded in order.

A recipe whose units do not depend on one another (a grid of configs, each trained as its
own population) and whose models are too small to use more than one core each runs them
``workers`` at a time in spawned processes. Every unit runs with ``threads`` intra-op
threads wherever it is computed (inline or in a worker), so its numbers do not depend on
``workers``; the main process records each unit through :meth:`RunDir.unit` in the jobs'
order, so ``metrics.jsonl`` and a resumed run are the same as a sequential run's. Units
already on disk are read, not recomputed; a unit a worker finished but the main process had
not yet recorded when the run was killed is recomputed on resume.

A job's function must be importable by name (a module-level function) and its arguments
picklable: spawned workers import it afresh (no fork of a process that holds threads).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from weightlab.errors import ConfigError
from weightlab.progress import progress_bar
from weightlab.runs.rundir import RunDir
from weightlab.threads import intra_op_threads

UnitResult = tuple[dict, dict[str, torch.Tensor]]


@dataclass(frozen=True)
class UnitJob:
    """One unit: ``fn(*args) -> (metrics, tensors)`` recorded as ``key``."""

    key: str
    fn: Callable[..., UnitResult]
    args: tuple = ()
    check: Callable[[dict], Any] | None = field(default=None, compare=False)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_job(fn: Callable[..., UnitResult], args: tuple, threads: int) -> UnitResult:
    with intra_op_threads(threads):
        return fn(*args)


def run_units(
    rd: RunDir,
    jobs: Sequence[UnitJob],
    workers: int = 1,
    threads: int = 1,
    progress: bool = False,
    label: str = "units",
) -> list[UnitResult]:
    """Compute ``jobs``' units not yet on disk, up to ``workers`` at once, and return every
    job's ``(metrics, tensors)`` as :meth:`RunDir.unit` does, in the jobs' order.

    ``workers = 1`` (or one unit left to compute) computes inline. Errors raised in a
    worker (e.g. :class:`~weightlab.errors.ConfigError`) reach the caller unchanged.
    """
    if workers < 1 or threads < 1:
        raise ConfigError(f"workers and threads must be >= 1, got {workers} and {threads}")
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ConfigError("run_units got two jobs with the same unit key; give each its own key")
    todo = [j for j in jobs if not rd.unit_done(j.key)]
    futures: dict[str, Future] = {}
    pool = None
    if workers > 1 and len(todo) > 1:
        pool = ProcessPoolExecutor(
            max_workers=min(workers, len(todo)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(threads,),
        )
        futures = {j.key: pool.submit(_run_job, j.fn, j.args, threads) for j in todo}
    bar = progress_bar(len(jobs), label, "unit", progress, line_each_update=True)
    out: list[UnitResult] = []
    try:
        for j in jobs:
            if j.key in futures:
                compute = futures[j.key].result
            else:
                compute = lambda j=j: _run_job(j.fn, j.args, threads)  # noqa: E731
            out.append(rd.unit(j.key, compute, check=j.check))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    return out


__all__ = ["UnitJob", "run_units"]
