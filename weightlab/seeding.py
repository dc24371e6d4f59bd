"""Explicit random number generators.

weightlab never draws from PyTorch's or NumPy's global RNG: every random draw takes a
``torch.Generator`` built here from an explicit integer seed. Draws happen on the CPU
and are moved to the target device afterwards, so the same seed gives the same initial
weights, masks and data orders on every device.
"""

from __future__ import annotations

import hashlib

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
