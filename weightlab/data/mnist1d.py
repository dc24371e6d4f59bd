"""MNIST-1D (Greydanus 2020), generated offline.

Uses ``mnist1d.data.make_dataset`` with the package's default arguments (never
``get_dataset``, which downloads a pickle). The generated arrays are cached as ``.npz``
in the user cache directory. Splits: the package's 4000 train samples become 3500
train + 500 validation (fixed permutation), and its 1000 test samples are the test set.
"""

from __future__ import annotations

import numpy as np

from weightlab.data.cache import cache_dir, load_npz, save_npz_atomic
from weightlab.data.task import TaskData, make_split, split_train_val
from weightlab.errors import DataError
from weightlab.seeding import preserved_global_rngs

VAL_SIZE = 500
SPLIT_SEED = 0
_KEYS = ("x", "y", "x_test", "y_test")


def _generate() -> dict[str, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise DataError(
            "the 'mnist1d' package is missing; install it with: pip install mnist1d"
        ) from e
    # make_dataset seeds NumPy's and Python's global RNGs; restore the caller's states.
    with preserved_global_rngs():
        ds = make_dataset(get_dataset_args())
    return {k: np.asarray(ds[k]) for k in _KEYS}


def load_mnist1d_arrays() -> dict[str, np.ndarray]:
    """Raw arrays (x, y, x_test, y_test), generated once and cached."""
    path = cache_dir() / "mnist1d-v1-default.npz"
    arrays = load_npz(path, _KEYS)
    if arrays is None:
        arrays = _generate()
        save_npz_atomic(path, **arrays)
    return arrays


def load_mnist1d() -> TaskData:
    """MNIST-1D: 3500 train / 500 val / 1000 test sequences of length 40, 10 classes."""
    a = load_mnist1d_arrays()
    train, val = split_train_val(a["x"], a["y"], VAL_SIZE, SPLIT_SEED)
    return TaskData("mnist1d", train, val, make_split(a["x_test"], a["y_test"]), 10)
