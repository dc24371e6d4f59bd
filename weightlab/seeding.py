"""Explicit random number generators.

weightlab never draws from PyTorch's or NumPy's global RNG: every random draw takes a
``torch.Generator`` built here from an explicit integer seed. Draws happen on the CPU
and are moved to the target device afterwards, so the same seed gives the same initial
weights, masks and data orders on every device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed derived from any printable parts (e.g. ``("init", 3)``).

    Uses SHA-256 of the parts' ``repr``, so it is the same across processes and
    Python versions (unlike ``hash``).
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


@contextmanager
def seeded_global_cpu_rng(seed: int) -> Iterator[None]:
    """Run code that draws from PyTorch's *global* CPU RNG (a constructor, a layer's own
    ``reset_parameters``) deterministically: inside ``torch.random.fork_rng(devices=[])``
    with only ``torch.default_generator`` seeded. Unlike ``torch.manual_seed`` it never
    reseeds accelerator generators, and the caller's CPU RNG state is restored on exit."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        yield


@contextmanager
def preserved_global_rngs() -> Iterator[None]:
    """Restore Python's and NumPy's global RNG states on exit: for third-party code that
    draws from or reseeds them (``mnist1d.make_dataset`` seeds both; importing
    scikit-learn's dataset loaders the first time draws from Python's ``random``), so
    loading a task never changes the caller's random streams."""
    import random

    import numpy as np

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
