"""Log a finished run to MLflow (the optional ``weightlab[mlflow]`` extra).

One MLflow run per run directory: experiment = the recipe name, run name = the run
directory's name, tag ``weightlab.run_id`` = that name, params = the config, metrics =
the points of :mod:`weightlab.tracking.records` (``metrics.jsonl`` by step and the
summary's ``metrics``), tags ``claim.<id>`` = verdict, artifacts = ``report.md``,
``summary.json``, ``config.json`` and the figures.

Logged once: a FINISHED MLflow run carrying the tag means the run directory is already
logged, so resuming a finished run logs nothing new. The MLflow run is created with the
tag and marked FINISHED only after everything is logged; one a killed logger left
unfinished is deleted and logged again.

Store: ``sqlite:///<ROOT absolute>/mlflow.db`` unless ``uri`` is given (MLflow 3 refuses
a plain file store without ``MLFLOW_ALLOW_FILE_STORE``, which weightlab leaves unset).
A new experiment on a local store (not ``http(s)://`` or ``databricks``) keeps its
artifacts under ``ROOT/mlflow-artifacts/`` rather than MLflow's default ``./mlruns`` of
the working directory. MLflow's INFO log lines (database creation and migrations) are
silenced while logging.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from weightlab.errors import ConfigError
from weightlab.tracking.records import TrackedRun, read_run

RUN_ID_TAG = "weightlab.run_id"
# MLflow's log_batch limits per call
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100
_REMOTE = ("http://", "https://", "databricks")


def default_uri(root: Path) -> str:
    """``sqlite:///<ROOT absolute>/mlflow.db``."""
    return f"sqlite:///{(Path(root).absolute() / 'mlflow.db').as_posix()}"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """MLflow's and alembic's loggers at WARNING, and deprecation warnings (SQLAlchemy's,
    from MLflow's store) off, for the duration (after ``import mlflow``, which sets its
    logger's level)."""
    import mlflow  # noqa: F401

    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _experiment_id(client, name: str, root: Path, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if not uri.startswith(_REMOTE):
        location = (Path(root).absolute() / "mlflow-artifacts" / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


def _tagged(client, eid: str, run_id: str) -> list:
    """The experiment's (not deleted) MLflow runs tagged ``weightlab.run_id = run_id``."""
    quote = "'" if "'" not in run_id else '"'
    if quote not in run_id:
        return list(
            client.search_runs([eid], filter_string=f"tags.`{RUN_ID_TAG}` = {quote}{run_id}{quote}")
        )
    found, token = [], None  # a name with both quotes: no filter string can hold it
    while True:
        page = client.search_runs([eid], max_results=1000, page_token=token)
        found += [r for r in page if r.data.tags.get(RUN_ID_TAG) == run_id]
        token = page.token
        if not token:
            return found


def _description(run: TrackedRun) -> str:
    lines = [f"weightlab run `{run.run_id}` of recipe `{run.recipe}`", ""]
    for cid, verdict in run.verdicts.items():
        lines.append(f"- claim {cid}: **{verdict}**: {run.statements[cid]} ({run.details[cid]})")
    return "\n".join(lines)


def log_run(run_dir: Path, *, root: Path, uri: str | None = None) -> bool:
    """Log the finished run in ``run_dir`` once; ``False`` (and nothing logged) if a
    FINISHED MLflow run with its ``weightlab.run_id`` tag exists."""
    run = read_run(run_dir)  # file errors before anything is logged
    uri = uri or default_uri(root)
    with quiet():
        from mlflow.exceptions import MlflowException

        try:
            return _log(run, root, uri)
        except (MlflowException, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"--log mlflow could not log {run.run_id} to {uri}: {first}; check "
                "--mlflow-uri (and that ROOT is writable)"
            ) from None


def _log(run: TrackedRun, root: Path, uri: str) -> bool:
    from mlflow.entities import Metric, Param, RunStatus, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    eid = _experiment_id(client, run.recipe, root, uri)
    found = _tagged(client, eid, run.run_id)
    if any(r.info.status == "FINISHED" for r in found):
        return False
    for r in found:  # left unfinished by a killed logger
        client.delete_run(r.info.run_id)
    tags = {
        RUN_ID_TAG: run.run_id,
        "weightlab.recipe": run.recipe,
        "mlflow.note.content": _description(run),
    }
    mrun = client.create_run(eid, run_name=run.run_id, tags=tags)
    rid = mrun.info.run_id
    ms = int(time.time() * 1000)
    params = [Param(k, v[:6000]) for k, v in run.params().items()]
    run_tags = [RunTag(k, v) for k, v in run.tags().items()]
    run_tags.append(RunTag("weightlab.non_default", json.dumps(sorted(run.non_default))[:5000]))
    metrics = [Metric(k, v, ms, s) for k, v, s in run.points]
    last = run.last_step
    metrics += [Metric(k, v, ms, last) for k, v in run.summary_metrics.items()]
    for chunk in _chunks(params, _MAX_PARAMS):
        client.log_batch(rid, params=chunk)
    for chunk in _chunks(run_tags, _MAX_TAGS):
        client.log_batch(rid, tags=chunk)
    for chunk in _chunks(metrics, _MAX_METRICS):
        client.log_batch(rid, metrics=chunk)
    for path in run.artifacts:
        client.log_artifact(rid, str(path))
    client.set_terminated(rid, RunStatus.to_string(RunStatus.FINISHED))
    return True


__all__ = ["RUN_ID_TAG", "default_uri", "log_run"]
