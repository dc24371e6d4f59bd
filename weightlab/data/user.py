"""User data from a ``.npz`` file: ``load_npz_task(path, seed)``.

The file holds ``x`` and ``y`` and optionally ``x_val``/``y_val`` and ``x_test``/``y_test``
(each pair both or neither). A split that is not given is carved out of ``x``/``y``: a
permutation seeded from ``seed`` gives ``max(1, round(0.1 n))`` rows to each missing split
(80/10/10 when only ``x``/``y`` are given). Integer (or bool) ``y`` is classification
(labels ``>= 0``, ``num_classes = max + 1``); float ``y`` is regression (a 1-D ``y``
becomes ``(n, 1)``). A 1-D ``x`` is one feature per row. The file is read with
``allow_pickle=False``: object arrays are refused, never unpickled.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from weightlab.data.splits import partition
from weightlab.data.task import Split, TaskData, make_regression_split, make_split
from weightlab.errors import DataError
from weightlab.seeding import derive_seed

KEYS = ("x", "y", "x_val", "y_val", "x_test", "y_test")
CARVE_FRACTION = 0.1
_SAVE_HINT = "save it with np.savez(FILE, x=inputs, y=targets)"


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; give the path of a .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(f"{path} is a single .npy array, not a .npz archive; {_SAVE_HINT}")
        with loaded as f:
            present = [k for k in KEYS if k in f.files]
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                held = ", ".join(f.files) or "nothing"
                raise DataError(
                    f"{path} has no {' or '.join(repr(k) for k in missing)} array (it holds: "
                    f"{held}); {_SAVE_HINT}"
                )
            arrays = {}
            for k in present:
                try:
                    arrays[k] = f[k]
                except ValueError as e:  # object arrays need pickle
                    raise DataError(
                        f"{path}: array {k!r} has a non-numeric (object) dtype; store numbers "
                        "(integer labels or float targets), not Python objects"
                    ) from e
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path} as a .npz archive ({e}); {_SAVE_HINT}") from e
    return arrays


def _check_pair(path: Path, xk: str, yk: str, x: np.ndarray, y: np.ndarray) -> None:
    for k, a in ((xk, x), (yk, y)):
        if a.dtype.kind not in "biuf":
            raise DataError(
                f"{path}: array {k!r} has dtype {a.dtype}, which is not numeric; store numbers "
                "(integer labels or float targets, float or integer inputs)"
            )
        if a.ndim == 0:
            raise DataError(f"{path}: array {k!r} is a scalar; store one row per example")
    if len(x) != len(y):
        raise DataError(
            f"{path}: {xk!r} has {len(x)} rows but {yk!r} has {len(y)}; give one target per input"
        )
    if len(x) == 0:
        raise DataError(f"{path}: {xk!r} and {yk!r} are empty; store at least one example")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{path}: {xk!r} holds NaN or infinite values; remove or impute them")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{path}: {yk!r} holds NaN or infinite values; remove those rows")


def load_npz_task(path: str | Path, seed: int = 0, name: str | None = None) -> TaskData:
    """Load user data from ``path`` (see the module docstring)."""
    path = Path(path)
    a = _read(path)
    pairs = {"train": ("x", "y")}
    for split in ("val", "test"):
        xk, yk = f"x_{split}", f"y_{split}"
        if (xk in a) != (yk in a):
            have, lack = (xk, yk) if xk in a else (yk, xk)
            raise DataError(f"{path} has {have!r} but no {lack!r}; store both or neither")
        if xk in a:
            pairs[split] = (xk, yk)
    for xk, yk in pairs.values():
        _check_pair(path, xk, yk, a[xk], a[yk])
    feat = a["x"].shape[1:]
    kinds = {a[yk].dtype.kind == "f" for _, yk in pairs.values()}
    if len(kinds) > 1:
        raise DataError(
            f"{path}: the y arrays mix integer and float dtypes; use integer labels everywhere "
            "(classification) or floats everywhere (regression)"
        )
    regression = kinds.pop()
    for xk, yk in pairs.values():
        if a[xk].shape[1:] != feat:
            raise DataError(
                f"{path}: {xk!r} rows have shape {a[xk].shape[1:]} but 'x' rows have {feat}; "
                "give every split the same feature shape"
            )
        if a[yk].shape[1:] != a["y"].shape[1:]:
            raise DataError(
                f"{path}: {yk!r} rows have shape {a[yk].shape[1:]} but 'y' rows have "
                f"{a['y'].shape[1:]}; give every split the same target shape"
            )

    data = {s: (a[xk], a[yk]) for s, (xk, yk) in pairs.items()}
    carve = [s for s in ("val", "test") if s not in data]
    if carve:
        x, y = data["train"]
        n = len(y)
        k = max(1, int(round(CARVE_FRACTION * n)))
        if n - k * len(carve) < 1:
            raise DataError(
                f"{path}: {n} rows are too few to carve out {' and '.join(carve)} "
                f"({k} row(s) each) and keep a training row; store more rows or give "
                + " and ".join(f"x_{s}/y_{s}" for s in carve)
            )
        parts = partition(n, [k] * len(carve) + [n - k * len(carve)], derive_seed("npz", seed))
        for s, idx in zip(carve, parts, strict=False):
            data[s] = (x[idx], y[idx])
        data["train"] = (x[parts[-1]], y[parts[-1]])

    def to_split(x: np.ndarray, y: np.ndarray) -> Split:
        x = x.reshape(len(x), -1) if x.ndim == 1 else x
        if regression:
            return make_regression_split(x, y[:, None] if y.ndim == 1 else y)
        return make_split(x, y)

    splits = {s: to_split(*data[s]) for s in ("train", "val", "test")}
    info = {"source": str(path), "seed": seed}
    label = name or str(path)
    if regression:
        return TaskData(label, *splits.values(), 0, kind="regression", info=info)
    for s, (_, y) in data.items():
        if y.ndim != 1:
            raise DataError(
                f"{path}: integer y of the {s} split has shape {y.shape}; classification needs "
                "one label per row (a 1-D array), or store float targets for regression"
            )
        if y.min() < 0:
            raise DataError(
                f"{path}: the {s} split has a negative label ({int(y.min())}); labels must be "
                "0, 1, ..., num_classes - 1"
            )
    num_classes = int(max(int(y.max()) for _, y in data.values())) + 1
    return TaskData(label, *splits.values(), num_classes, info=info)
