"""Optional experiment tracking: log finished runs to MLflow or TensorBoard.

``weightlab run|sweep|reproduce --log mlflow|tensorboard`` call :func:`check_logger`
before anything is written and :func:`log_finished_run` in the main process once a run
has finished. The tracking packages are extras (``weightlab[mlflow]``,
``weightlab[tensorboard]``), imported only when a run is logged (``import mlflow`` takes
over a second). What is logged, and how ``metrics.jsonl`` becomes scalars by step:
:mod:`weightlab.tracking.records`; per backend: :mod:`.mlflow_log`,
:mod:`.tensorboard_log`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

from weightlab.errors import ConfigError

KINDS = ("mlflow", "tensorboard")


def add_log_flags(parser) -> None:
    """``--log mlflow|tensorboard`` and ``--mlflow-uri``, as ``run``, ``sweep`` and
    ``reproduce`` take them (an argparse parser)."""
    parser.add_argument(
        "--log", choices=KINDS, default=None, help="also log each finished run (needs the extra)"
    )
    parser.add_argument(
        "--mlflow-uri", default=None, help="MLflow tracking URI [sqlite:///ROOT/mlflow.db]"
    )


def check_logger(kind: str | None, *, root: Path, uri: str | None = None) -> None:
    """Check ``--log kind`` (and ``--mlflow-uri``) before anything is written:
    :class:`~weightlab.errors.ConfigError` with one line for an unknown kind, a missing
    extra, a URI without ``--log mlflow``, a URI that is not an MLflow tracking URI, a file
    store (MLflow 3 refuses one unless ``MLFLOW_ALLOW_FILE_STORE=true``), or a SQL store
    without SQLAlchemy/alembic (``mlflow-skinny``). Packages are looked up, not imported."""
    if kind is None:
        if uri is not None:
            raise ConfigError("--mlflow-uri needs --log mlflow; add --log mlflow or drop the URI")
        return
    if kind not in KINDS:
        raise ConfigError(f"--log {kind!r} is not a logger; choose one of {', '.join(KINDS)}")
    if uri is not None and kind != "mlflow":
        raise ConfigError(f"--mlflow-uri applies to --log mlflow, not --log {kind}; drop the URI")
    if importlib.util.find_spec(kind) is None:
        raise ConfigError(f"--log {kind} needs the {kind} package: pip install 'weightlab[{kind}]'")
    if kind == "mlflow":
        _check_uri(uri)


# MLflow tracking stores by URI scheme; the SQL ones need SQLAlchemy and alembic, which
# the full ``mlflow`` package brings and ``mlflow-skinny`` does not.
_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_OTHER_SCHEMES = ("http", "https", "databricks", "databricks-uc", "file")


def _major(package: str) -> int:
    """The installed distribution's major version (0 if unknown), read without importing."""
    try:
        return int(importlib.metadata.version(package).split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return 0


def _check_uri(uri: str | None) -> None:
    scheme = "sqlite" if uri is None else uri.split(":", 1)[0].split("+", 1)[0]
    if uri is not None and (":" not in uri or scheme not in _SQL_SCHEMES + _OTHER_SCHEMES):
        raise ConfigError(
            f"--mlflow-uri {uri!r} is not an MLflow tracking URI; give one such as "
            "sqlite:///PATH/mlflow.db or http://HOST:PORT"
        )
    if (
        scheme == "file"
        and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true"
        and _major("mlflow") >= 3
    ):
        raise ConfigError(
            f"--mlflow-uri {uri!r} is a file store, which MLflow 3 refuses unless "
            "MLFLOW_ALLOW_FILE_STORE=true; give sqlite:///PATH/mlflow.db instead"
        )
    if scheme in _SQL_SCHEMES:
        missing = [m for m in ("sqlalchemy", "alembic") if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(
                f"--log mlflow with a {scheme} store needs {' and '.join(missing)} "
                "(mlflow-skinny lacks them): pip install 'weightlab[mlflow]'"
            )


def log_finished_run(kind: str, run_dir: Path, *, root: Path, uri: str | None = None) -> bool:
    """Log the finished run in ``run_dir`` to ``kind`` once: config, ``metrics.jsonl`` by
    step, the summary's ``metrics``, verdicts, report and summary. Returns ``False`` and
    logs nothing when that run was already logged (a resumed run);
    :class:`~weightlab.errors.RunFileError` when ``run_dir`` has not finished."""
    check_logger(kind, root=root, uri=uri)
    if kind == "mlflow":
        from weightlab.tracking.mlflow_log import log_run

        return log_run(Path(run_dir), root=Path(root), uri=uri)
    from weightlab.tracking.tensorboard_log import log_run as log_tb

    return log_tb(Path(run_dir), root=Path(root))


__all__ = ["KINDS", "check_logger", "log_finished_run"]
