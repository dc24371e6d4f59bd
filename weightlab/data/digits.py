"""scikit-learn's 8x8 handwritten digits (1797 images), shipped with scikit-learn.

Pixels are scaled from 0..16 to 0..1 and flattened to 64 features. Fixed splits:
1257 train / 180 validation / 360 test.
"""

from __future__ import annotations

import numpy as np
import torch

from weightlab.data.task import TaskData, make_split, split_train_val
from weightlab.seeding import generator, preserved_global_rngs

TEST_SIZE = 360
VAL_SIZE = 180
SPLIT_SEED = 0


def load_digits() -> TaskData:
    with preserved_global_rngs():  # the first sklearn import draws from Python's random
        from sklearn.datasets import load_digits as _load

        d = _load()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = torch.randperm(len(y), generator=generator(SPLIT_SEED + 1)).numpy()
    test_idx, rest = np.sort(perm[:TEST_SIZE]), np.sort(perm[TEST_SIZE:])
    train, val = split_train_val(x[rest], y[rest], VAL_SIZE, SPLIT_SEED)
    return TaskData("digits", train, val, make_split(x[test_idx], y[test_idx]), 10)
