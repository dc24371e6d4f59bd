"""Atomic, pickle-free file I/O for run directories.

Every write goes to a temporary file in the same directory and is renamed into place,
so a process killed at any moment leaves either the old file or the new one, never half
of one. Tensors are stored as safetensors, everything else as JSON; nothing is unpickled.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from weightlab.errors import RunFileError
from weightlab.procs import pid_alive


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_TMP = re.compile(r"^\..+\.(\d+)\.tmp$")


def remove_stale_temp_files(directory: Path) -> None:
    """Delete temporary files left by writers that were killed (e.g. SIGKILL) mid-write.

    Only files whose writer process no longer exists are removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for p in directory.iterdir():
        m = _TMP.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def dumps_json(obj: Any) -> str:
    return json.dumps(_clean(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, dumps_json(obj))


def read_json(path: Path, what: str = "run file") -> Any:
    """Read JSON, turning a missing or corrupt file into a one-line :class:`RunFileError`."""
    path = Path(path)
    if not path.exists():
        raise RunFileError(f"{what} {path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFileError(
            f"{what} {path} is unreadable or corrupt ({type(e).__name__}); delete it and re-run to recompute it"
        ) from e


ORDER_KEY = "weightlab.order"


def save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write tensors as safetensors, atomically. The keys' order is kept in the metadata
    (``weightlab.order``): :func:`load_tensors` returns them in that order."""
    from safetensors.torch import save

    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {**(metadata or {}), ORDER_KEY: json.dumps(list(clean))}
    atomic_write_bytes(Path(path), save(clean, metadata=meta))


def _saved_order(raw: bytes) -> list[str] | None:
    """The key order :func:`save_tensors` recorded in the safetensors header, if any."""
    if len(raw) < 8:
        return None
    size = int.from_bytes(raw[:8], "little")
    try:
        header = json.loads(raw[8 : 8 + size])
        order = json.loads((header.get("__metadata__") or {}).get(ORDER_KEY, "null"))
    except (ValueError, AttributeError):
        return None
    return order if isinstance(order, list) else None


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; missing or corrupt files raise :class:`RunFileError`."""
    from safetensors.torch import load

    path = Path(path)
    if not path.exists():
        raise RunFileError(
            f"tensor file {path} is missing; delete the run directory's units/ entry and re-run"
        )
    raw = path.read_bytes()
    try:
        data = load(raw)
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise RunFileError(
            f"tensor file {path} is unreadable or corrupt ({type(e).__name__}); delete it and re-run to recompute it"
        ) from e
    # safetensors returns the keys in a per-process random order; a sum over a unit's
    # tensors must not change with it (a resumed run equals a fresh one)
    order = _saved_order(raw)
    if order is None or sorted(order) != sorted(data):
        order = sorted(data)
    # clone: fresh 64-byte-aligned storage instead of views into the file's bytes
    return {k: data[k].clone().to(device) for k in order}
