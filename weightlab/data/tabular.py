"""scikit-learn's small tabular classification sets (shipped with scikit-learn, offline).

``iris`` (150 x 4, 3 classes), ``wine`` (178 x 13, 3 classes), ``breast_cancer``
(569 x 30, 2 classes). Fixed split: stratified 60/20/20 (every class split in those
proportions by one ``generator(0)`` permutation per class, classes in order); features
standardized with the train split's mean and standard deviation (``info["mean"]``,
``info["std"]``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from weightlab.data.splits import standardize, stratified_split
from weightlab.data.task import TaskData, make_split
from weightlab.seeding import preserved_global_rngs

FRACTIONS = (0.6, 0.2, 0.2)
SPLIT_SEED = 0


def _sklearn_loader(name: str) -> Callable:
    with preserved_global_rngs():  # the first import draws from Python's global random
        import sklearn.datasets as ds

    return {
        "iris": ds.load_iris,
        "wine": ds.load_wine,
        "breast_cancer": ds.load_breast_cancer,
    }[name]


def load_tabular(name: str) -> TaskData:
    """One of ``iris``, ``wine``, ``breast_cancer`` with its fixed stratified split."""
    with preserved_global_rngs():
        bunch = _sklearn_loader(name)()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    tr, va, te = stratified_split(y, FRACTIONS, SPLIT_SEED)
    (x_tr, x_va, x_te), mean, std = standardize(x[tr], x[va], x[te])
    return TaskData(
        name,
        make_split(x_tr, y[tr]),
        make_split(x_va, y[va]),
        make_split(x_te, y[te]),
        int(y.max()) + 1,
        info={
            "mean": torch.as_tensor(mean, dtype=torch.float32),
            "std": torch.as_tensor(std, dtype=torch.float32),
            "feature_names": [str(f) for f in bunch.feature_names],
        },
    )


def load_iris() -> TaskData:
    return load_tabular("iris")


def load_wine() -> TaskData:
    return load_tabular("wine")


def load_breast_cancer() -> TaskData:
    return load_tabular("breast_cancer")
