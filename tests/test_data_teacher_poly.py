"""The ``teacher_poly`` task: y = prod of chosen coordinates of x ~ N(0, I_d)."""

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.errors import DataError


def test_default_is_x1_x2_on_50_dims_deterministic():
    t = load_dataset("teacher_poly", n_train=40, n_val=10, n_test=2000)
    assert t.kind == "regression"
    assert t.train.x.shape == (40, 50) and t.train.y.shape == (40, 1)
    assert t.train.y.dtype == torch.float32
    for split in (t.train, t.val, t.test):
        torch.testing.assert_close(split.y[:, 0], split.x[:, 0] * split.x[:, 1])
    assert float(t.test.y.var()) == pytest.approx(1.0, abs=0.15)  # Var(x1 x2) = 1
    again = load_dataset("teacher_poly", n_train=40, n_val=10, n_test=2000)
    torch.testing.assert_close(again.train.x, t.train.x)
    other = load_dataset("teacher_poly", n_train=40, n_val=10, n_test=2000, seed=1)
    assert not torch.equal(other.train.x, t.train.x)


def test_monomial_noise_and_split_independence():
    t = load_dataset("teacher_poly", d=6, monomial="2,4,5", n_train=8, n_test=5, n_val=3)
    x = t.train.x
    torch.testing.assert_close(t.train.y[:, 0], x[:, 1] * x[:, 3] * x[:, 4])
    assert t.info["monomial"].tolist() == [1, 3, 4]
    bigger = load_dataset("teacher_poly", d=6, monomial="2,4,5", n_train=20, n_test=5, n_val=3)
    torch.testing.assert_close(bigger.test.x, t.test.x)  # test set independent of n_train
    noisy = load_dataset("teacher_poly", d=6, n_train=500, n_val=3, n_test=3, noise=0.5)
    resid = noisy.train.y[:, 0] - noisy.train.x[:, 0] * noisy.train.x[:, 1]
    assert float(resid.std()) == pytest.approx(0.5, rel=0.15)


def test_bad_monomial_is_one_line_data_error():
    with pytest.raises(DataError, match="1..d=4"):
        load_dataset("teacher_poly", d=4, monomial="1,5")
    with pytest.raises(DataError, match="distinct"):
        load_dataset("teacher_poly", monomial="2,2")
    with pytest.raises(DataError, match="monomial"):
        load_dataset("teacher_poly", monomial="0,1")
