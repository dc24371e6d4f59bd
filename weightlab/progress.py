"""Progress bars for long work (tqdm), quiet in logs.

On a terminal the bar refreshes several times a second; when stderr is not a terminal
(CI logs, files) it refreshes at most every 30 s so logs stay readable.
"""

from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, leave: bool = True):
    """A ``tqdm`` bar, or ``None`` when ``enabled`` is false."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, leave=leave, mininterval=0.1 if tty else 30.0)
