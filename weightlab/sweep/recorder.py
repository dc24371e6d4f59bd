"""What the main process records around each run: the catalog row at start and end, and
(``--log mlflow|tensorboard``) the finished run in a tracking store, logged once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunRecorder:
    """Catalog rows under ``root`` and optional logging; the one writer of the catalog."""

    root: Path
    catalog: bool = True
    log: str | None = None
    log_uri: str | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._cat = None

    def check(self) -> None:
        """Before anything is written: a ``--log`` kind whose package is missing is a
        one-line error."""
        if self.log is not None:
            from weightlab.tracking import check_logger

            check_logger(self.log, root=self.root, uri=self.log_uri)

    def _catalog(self):
        if self._cat is None:
            from weightlab.catalog import open_catalog

            self._cat = open_catalog(self.root)
        return self._cat

    def started(self, run_dir: Path, *, sweep: str | None = None, group: str | None = None) -> None:
        if self.catalog:
            self._catalog().record_start(Path(run_dir), sweep=sweep, group=group)

    def finished(
        self, run_dir: Path, status: str, *, error: str | None = None, wall_s: float | None = None
    ) -> None:
        if self.catalog:
            self._catalog().record_end(Path(run_dir), status, error=error, wall_s=wall_s)
        if self.log is not None and status == "done":
            from weightlab.tracking import log_finished_run

            log_finished_run(self.log, Path(run_dir), root=self.root, uri=self.log_uri)

    def finished_before(self, run_dir: Path) -> None:
        """A run found finished (a resumed sweep skips it): log it if a killed process
        never did; the logger itself knows what it has logged."""
        if self.log is not None:
            from weightlab.tracking import log_finished_run

            log_finished_run(self.log, Path(run_dir), root=self.root, uri=self.log_uri)

    def close(self) -> None:
        if self._cat is not None:
            self._cat.close()
            self._cat = None
