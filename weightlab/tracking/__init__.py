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

import importlib.util
from pathlib import Path

from weightlab.errors import ConfigError

KINDS = ("mlflow", "tensorboard")


def check_logger(kind: str | None, *, root: Path, uri: str | None = None) -> None:
    """Check ``--log kind`` (and ``--mlflow-uri``) before anything is written:
    :class:`~weightlab.errors.ConfigError` with one line for an unknown kind, a missing
    extra, or a URI without MLflow. The extra is looked up, not imported."""
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
