"""glibc ``malloc`` settings for tensor workloads, applied once when weightlab is imported.

PyTorch's CPU allocator takes every tensor from ``malloc``. glibc serves a block above its
mmap threshold (128 KiB at start, raised up to 32 MiB as such blocks are freed) with a
fresh ``mmap`` and gives it back with ``munmap``; it also trims free memory at the top of
the heap. Either way the next tensor of that size starts on untouched pages, and the
kernel faults and zeroes each 4 KiB page on first touch.

Training repeats the same allocations every step, so that cost can recur every step.
How often it does depends on the process's allocation history. glibc's adaptive
threshold sometimes settles by itself: inside ``bench/growth.py`` it did, with 7–95
faults per call either way.

Measured here (AMD EPYC VM, 2 threads): the continual recipe's hypernetwork, forward and
backward for 64 conditions, in 4 interleaved pairs of fresh processes.

- Page faults: 363–643 per call with glibc's defaults, 0–29 with the settings below.
- Median time per call, defaults against tuned: 6.2–9.0 ms against 5.2–7.7 ms (autograd
  path), 6.4–8.4 ms against 4.9–6.7 ms (fused path). Tuned was faster in 6 of
  the 8 comparisons (both paths in 3 of the 4 pairs; in the fourth it was 0.17 and 0.21 ms
  slower).
- The same forward and backward written as bare ops took 4.3–6.0 ms with freshly
  allocated outputs, 3.4–3.7 ms with preallocated ones, and 3.5–3.9 ms freshly allocated
  under these settings.

:func:`tune_malloc` raises both thresholds (``mallopt(M_MMAP_THRESHOLD)`` and
``mallopt(M_TRIM_THRESHOLD)``), so freed tensor memory stays in the heap and is reused
without faults. This has the same aim as the tcmalloc or jemalloc ``LD_PRELOAD`` that
PyTorch's CPU performance tuning guide suggests, and needs no preload. The cost is that the process keeps up to
``trim_threshold`` bytes of freed memory mapped instead of returning it to the OS.

Set ``WEIGHTLAB_MALLOC=system`` before importing weightlab to keep glibc's defaults. On
anything but Linux with glibc, nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "malloc_tuned", "tune_malloc"]

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20  # blocks up to 256 MiB come from the heap, reused when freed
TRIM_THRESHOLD = 512 << 20  # up to 512 MiB of free heap top stays mapped

_tuned = False


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl does not)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds (bytes) for this process. Returns ``True``
    when both settings took effect. Returns ``False`` on other platforms, or when glibc
    refused one (a threshold it accepted before the refusal stays set)."""
    global _tuned
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    ok = ok and libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold)) == 1
    _tuned = _tuned or ok
    return ok


def malloc_tuned() -> bool:
    """Whether :func:`tune_malloc` took effect in this process."""
    return _tuned


def tune_on_import() -> None:
    """Called by ``import weightlab``: :func:`tune_malloc` unless ``WEIGHTLAB_MALLOC`` is
    ``system``."""
    if os.environ.get("WEIGHTLAB_MALLOC", "").strip().lower() != "system":
        tune_malloc()
