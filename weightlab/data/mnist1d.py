"""MNIST-1D (Greydanus 2020), generated offline.

Uses ``mnist1d.data.make_dataset`` with the package's default arguments (never
``get_dataset``, which downloads a pickle). The generated arrays are cached as ``.npz``
in the user cache directory. Splits: the package's 4000 train samples become 3500
train + 500 validation (fixed permutation), and its 1000 test samples are the test set.
``load_mnist1d_binary`` is the two-class version (digits 0-4 vs 5-9) with a training set of
size P drawn from the 4000 train+val examples.
"""

from __future__ import annotations

import numpy as np
import torch

from weightlab.data.cache import cache_dir, load_npz, save_npz_atomic
from weightlab.data.params import Param
from weightlab.data.task import TaskData, make_split, split_train_val
from weightlab.errors import DataError
from weightlab.seeding import derive_seed, generator, preserved_global_rngs

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


# -- binary MNIST-1D (Sclocchi, Geiger & Wyart 2023, row [#54]) ------------------------------
BINARY_POOL = 4000  # MNIST-1D's 3500 train + 500 val examples, the pool P is drawn from
BINARY_SPLIT = 5  # digits 0-4 -> class 0, 5-9 -> class 1

BINARY_PARAMS = (
    Param(
        "n_train",
        "int",
        1024,
        f"training examples P, drawn class-balanced from the {BINARY_POOL} train+val pool",
        min=2,
        max=BINARY_POOL,
    ),
    Param(
        "n_val",
        "int",
        500,
        "validation examples, drawn from the pool left after the training draw "
        "(at most what is left: none when n_train = 4000)",
        min=0,
        max=BINARY_POOL,
    ),
    Param(
        "seed", "int", 0, "seed of the class-balanced training draw and the validation draw", min=0
    ),
)


def binary_labels(digits: np.ndarray) -> np.ndarray:
    """Digits 0-4 -> 0 and 5-9 -> 1 (int64)."""
    return (np.asarray(digits) >= BINARY_SPLIT).astype(np.int64)


def balanced_draw(labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, class-balanced draw of ``n`` indices without replacement from binary
    ``labels``; returns ``(drawn, rest)``, each sorted.

    Class 0 gets ``n // 2`` and class 1 ``n - n // 2``; when a class has fewer examples than
    its share, the other class makes up the shortfall (so ``n = len(labels)`` takes all).
    Each class is permuted by one generator seeded with ``seed`` (class 0 first); the rest
    keeps the permuted order's tail of both classes."""
    labels = np.asarray(labels)
    if not 0 <= n <= len(labels):
        raise DataError(f"cannot draw {n} examples from a pool of {len(labels)}")
    g = generator(derive_seed("mnist1d_binary", seed))
    perms = [np.flatnonzero(labels == c) for c in (0, 1)]
    perms = [idx[torch.randperm(len(idx), generator=g).numpy()] for idx in perms]
    want = [n // 2, n - n // 2]
    take = [min(want[c], len(perms[c])) for c in (0, 1)]
    short = n - sum(take)
    for c in (0, 1):
        extra = min(short, len(perms[c]) - take[c])
        take[c] += extra
        short -= extra
    drawn = np.concatenate([perms[c][: take[c]] for c in (0, 1)])
    rest = np.concatenate([perms[c][take[c] :] for c in (0, 1)])
    return np.sort(drawn), rest


def load_mnist1d_binary(n_train: int, n_val: int, seed: int) -> TaskData:
    """Binary MNIST-1D, digits 0-4 vs 5-9 (the task of Sclocchi et al. 2023 [#54] on
    MNIST-1D): ``n_train`` = P examples drawn without replacement and class-balanced
    (:func:`balanced_draw`) from the package's 4000 train examples (weightlab's 3500 train +
    500 val of ``mnist1d``); validation = ``min(n_val, 4000 - P)`` examples drawn from what
    is left (seeded); test = MNIST-1D's 1000 test examples. ``info``: ``pool_index`` of the
    training and validation rows in the 4000-example pool, the training digits."""
    a = load_mnist1d_arrays()
    y_all = binary_labels(a["y"])
    train_idx, rest = balanced_draw(y_all, n_train, seed)
    g = generator(derive_seed("mnist1d_binary", "val", seed))
    rest = rest[torch.randperm(len(rest), generator=g).numpy()]
    val_idx = np.sort(rest[: min(n_val, len(rest))])
    x = a["x"].astype(np.float32)
    info = {
        "train_pool_index": torch.as_tensor(train_idx),
        "val_pool_index": torch.as_tensor(val_idx),
        "train_digits": torch.as_tensor(a["y"][train_idx].astype(np.int64)),
    }
    return TaskData(
        "mnist1d_binary",
        make_split(x[train_idx], y_all[train_idx]),
        make_split(x[val_idx], y_all[val_idx]),
        make_split(a["x_test"].astype(np.float32), binary_labels(a["y_test"])),
        2,
        info=info,
    )
