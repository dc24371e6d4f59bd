"""Processes on this host (standard library only, so light modules may import it)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (signal 0). A process of another user
    counts as alive; an impossible pid does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):
        return False
    except OSError:  # exists, but belongs to someone else
        return True
    return True
