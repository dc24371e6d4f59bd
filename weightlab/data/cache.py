"""The user cache directory and atomic ``.npz`` caching (never pickled)."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from weightlab.errors import DataError

# what np.load raises for a truncated or non-npz file
_CORRUPT = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def cache_dir() -> Path:
    """``$WEIGHTLAB_CACHE``, else ``$XDG_CACHE_HOME/weightlab``, else ``~/.cache/weightlab``."""
    if env := os.environ.get("WEIGHTLAB_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "weightlab"


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write arrays to ``path`` via a temporary file and rename, so readers never see half a file."""
    from weightlab.runs.files import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """Load ``keys`` from a cached ``.npz`` (``allow_pickle=False``); ``None`` if absent or corrupt."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in keys}
    except _CORRUPT as e:  # corrupt cache: regenerate
        try:
            path.unlink()
        except OSError as unlink_err:
            raise DataError(
                f"cache file {path} is corrupt and cannot be removed ({unlink_err}); delete it by hand"
            ) from e
        return None
