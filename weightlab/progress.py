"""Progress reports for long work: a tqdm bar on a terminal, plain lines in logs.

On a terminal (stderr is a TTY) this is a ``tqdm`` bar. Anywhere else (``make run > log``,
CI, a pipe) tqdm's carriage returns and escape codes would garble the log, so progress is
written as plain lines: one per update for bars made with ``line_each_update=True`` (e.g.
one line per IMP round), and at most one line per :data:`LOG_INTERVAL_S` seconds over all
other bars together. No line ever contains ``\\r`` or ``\\x1b[``.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

LOG_INTERVAL_S = 30.0
_last_line = [time.monotonic()]  # when any plain progress line was last written


def _fmt_time(s: float) -> str:
    m, s = divmod(int(s), 60)
    return f"{m}:{s:02d}" if m < 60 else f"{m // 60}:{m % 60:02d}:{s:02d}"


class PlainProgress:
    """A progress report of plain lines (``desc: n/total unit [elapsed]``), for logs.

    Args:
        line_each_update: write one line per :meth:`update` (use for coarse units such as
            rounds); otherwise write a line only when ``interval`` seconds have passed
            both since this bar started and since any progress line was written.
        interval: the throttle interval in seconds.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str,
        *,
        line_each_update: bool = False,
        interval: float = LOG_INTERVAL_S,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = 0
        self.line_each_update = line_each_update
        self.interval = float(interval)
        self.stream = stream
        self.start = time.monotonic()

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.line_each_update or now - max(_last_line[0], self.start) >= self.interval:
            self._line(now)

    def _line(self, now: float) -> None:
        text = f"{self.desc}: {self.n}/{self.total} {self.unit} [{_fmt_time(now - self.start)}]"
        text = text.replace("\r", " ").replace("\x1b", "")
        stream = self.stream if self.stream is not None else sys.stderr
        print(text, file=stream, flush=True)
        _last_line[0] = now

    def close(self) -> None:
        """Nothing to clean up: plain lines are never rewritten."""


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(
    total: int,
    desc: str,
    unit: str,
    enabled: bool = True,
    leave: bool = True,
    line_each_update: bool = False,
):
    """A ``tqdm`` bar when stderr is a terminal, a :class:`PlainProgress` otherwise, or
    ``None`` when ``enabled`` is false. Both have ``update``, ``set_description`` and
    ``close``."""
    if not enabled:
        return None
    if not _is_tty(sys.stderr):
        return PlainProgress(total, desc, unit, line_each_update=line_each_update)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=leave, mininterval=0.1)
