"""Binary MNIST-1D (digits 0-4 vs 5-9) with a class-balanced training draw of size P
(methods row [#54])."""

import numpy as np
import pytest

from weightlab.data import load_dataset, task_params
from weightlab.data.mnist1d import (
    BINARY_POOL,
    balanced_draw,
    binary_labels,
    load_mnist1d_arrays,
)
from weightlab.errors import DataError


def test_binary_labels_split_digits_at_five():
    assert binary_labels(np.arange(10)).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_balanced_draw_hand_computed():
    labels = np.array([0, 0, 0, 1])
    drawn, rest = balanced_draw(labels, 4, seed=0)
    assert drawn.tolist() == [0, 1, 2, 3] and rest.size == 0
    # want 1 of class 0 and 2 of class 1; class 1 has one, so class 0 makes up the shortfall
    drawn, rest = balanced_draw(labels, 3, seed=0)
    assert labels[drawn].tolist() == [0, 0, 1] and len(rest) == 1 and labels[rest[0]] == 0
    drawn, _ = balanced_draw(np.array([0, 1] * 10), 6, seed=3)
    assert np.bincount(np.array([0, 1] * 10)[drawn]).tolist() == [3, 3]
    with pytest.raises(DataError, match="cannot draw 5"):
        balanced_draw(labels, 5, seed=0)


def test_training_draw_is_balanced_without_replacement_and_matches_the_pool():
    d = load_dataset("mnist1d_binary", n_train=256, n_val=100, seed=0)
    a = load_mnist1d_arrays()
    tr, va = d.info["train_pool_index"].numpy(), d.info["val_pool_index"].numpy()
    assert len(d.train) == 256 and len(np.unique(tr)) == 256
    assert d.train.y.bincount().tolist() == [128, 128]
    assert len(d.val) == 100 and not set(tr) & set(va)
    np.testing.assert_array_equal(d.train.x.numpy(), a["x"][tr].astype(np.float32))
    np.testing.assert_array_equal(d.train.y.numpy(), binary_labels(a["y"][tr]))
    np.testing.assert_array_equal(d.val.y.numpy(), binary_labels(a["y"][va]))
    assert len(d.test) == 1000 and d.num_classes == 2 and d.kind == "classification"
    np.testing.assert_array_equal(d.test.y.numpy(), binary_labels(a["y_test"]))


def test_draw_is_deterministic_per_seed():
    a = load_dataset("mnist1d_binary", n_train=64, seed=1).info["train_pool_index"]
    b = load_dataset("mnist1d_binary", n_train=64, seed=1).info["train_pool_index"]
    c = load_dataset("mnist1d_binary", n_train=64, seed=2).info["train_pool_index"]
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


def test_the_whole_pool_leaves_no_validation_split():
    d = load_dataset("mnist1d_binary", n_train=BINARY_POOL)
    assert len(d.train) == BINARY_POOL and len(d.val) == 0
    assert sorted(d.info["train_pool_index"].tolist()) == list(range(BINARY_POOL))
    d = load_dataset("mnist1d_binary", n_train=3800, n_val=500)
    assert len(d.val) == 200  # at most what is left


def test_bad_parameters_are_one_line():
    assert task_params("mnist1d_binary") == {"n_train": 1024, "n_val": 500, "seed": 0}
    for bad in ({"n_train": 4001}, {"n_train": 1}, {"n_val": -1}, {"size": 3}):
        with pytest.raises(DataError) as e:
            load_dataset("mnist1d_binary", **bad)
        assert "\n" not in str(e.value)
