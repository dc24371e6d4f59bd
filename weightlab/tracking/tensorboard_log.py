"""Log a finished run to TensorBoard (the optional ``weightlab[tensorboard]`` extra).

Event files go to ``ROOT/tensorboard/<run id>/`` through
:class:`torch.utils.tensorboard.SummaryWriter` (which needs the ``tensorboard``
package): every point of :mod:`weightlab.tracking.records` as a scalar (``metrics.jsonl``
by step; the summary's ``metrics`` at the run's last step), and as text ``config`` (the
config, non-default fields marked) and ``claims`` (each claim's verdict, statement and
deciding numbers).

Logged once: the run counts as logged when its directory exists and holds an event file.
The writer works in ``ROOT/tensorboard/.<run id>.tmp-<pid>/`` and renames it into place
at the end, so a logger killed midway leaves no directory that counts (its temporary
directory is removed by the next logger once its process is gone).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from weightlab.procs import pid_alive
from weightlab.tracking.records import TrackedRun, read_run

_TMP = re.compile(r"^\.(.+)\.tmp-(\d+)$")


def log_dir(root: Path, run_id: str) -> Path:
    """``ROOT/tensorboard/<run id>``."""
    return Path(root) / "tensorboard" / run_id


def is_logged(root: Path, run_id: str) -> bool:
    d = log_dir(root, run_id)
    return d.is_dir() and any(p.name.startswith("events.out.tfevents.") for p in d.iterdir())


def _remove_stale(parent: Path) -> None:
    if not parent.is_dir():
        return
    for p in parent.iterdir():
        m = _TMP.match(p.name)
        if m and int(m.group(2)) != os.getpid() and not pid_alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True)


def _config_text(run: TrackedRun) -> str:
    rows = ["| field | value | |", "|---|---|---|"]
    for k, v in run.config.items():
        rows.append(f"| {k} | {v} | {'non-default' if k in run.non_default else ''} |")
    if run.sweep is not None:
        rows.append(f"| (sweep) | {run.sweep} | batch group {run.batch_group} |")
    return "\n".join(rows)


def _claims_text(run: TrackedRun) -> str:
    rows = ["| claim | verdict | statement | detail |", "|---|---|---|---|"]
    for cid, verdict in run.verdicts.items():
        rows.append(f"| {cid} | {verdict} | {run.statements[cid]} | {run.details[cid]} |")
    return "\n".join(rows)


def log_run(run_dir: Path, *, root: Path) -> bool:
    """Log the finished run in ``run_dir`` once; ``False`` (and nothing written) if
    ``ROOT/tensorboard/<run id>/`` already holds an event file."""
    run = read_run(run_dir)
    if is_logged(root, run.run_id):
        return False
    from torch.utils.tensorboard import SummaryWriter

    parent = Path(root) / "tensorboard"
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(parent)
    tmp = parent / f".{run.run_id}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    writer = SummaryWriter(log_dir=str(tmp))
    try:
        _write(writer, run)
    except BaseException:
        writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    writer.close()
    dest = log_dir(root, run.run_id)
    if dest.exists():  # a directory without an event file: not a logged run
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return True


def _write(writer, run: TrackedRun) -> None:
    for key, value, step in run.points:
        writer.add_scalar(key, value, step)
    last = run.last_step
    for key, value in run.summary_metrics.items():
        writer.add_scalar(key, value, last)
    writer.add_text("config", _config_text(run), 0)
    writer.add_text("claims", _claims_text(run), last)
    for cid, verdict in run.verdicts.items():
        writer.add_text(f"claim.{cid}", verdict, last)
    writer.flush()


__all__ = ["is_logged", "log_dir", "log_run"]
