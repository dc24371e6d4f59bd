"""Intra-op thread count for a block of work, restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, then restore the caller's count
    (also on error). For tiny models, where splitting each op over threads only costs, and
    for thread pools whose workers each take one thread (no oversubscription)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["intra_op_threads"]
