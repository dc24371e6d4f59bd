"""Linear probe [#33]: scikit-learn's LogisticRegression (C = 1) on standardized features."""

import math

import numpy as np
import pytest
import torch

from weightlab.data import load_dataset
from weightlab.errors import ConfigError, DataError
from weightlab.probes.linear_probe import fit_logistic, linear_probe, standardize

COEF_TOL = 1.4e-3  # the measured agreement with scikit-learn


def _sklearn(train_x, train_y, test_x):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(train_x.double().numpy())
    m = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000)
    m.fit(sc.transform(train_x.double().numpy()), train_y.numpy())
    return m, m.predict(sc.transform(test_x.double().numpy()))


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer"])
def test_matches_scikit_learn(name):
    t = load_dataset(name)
    p = linear_probe(t.train.x, t.train.y, t.test.x, t.test.y)
    ref, pred = _sklearn(t.train.x, t.train.y, t.test.x)
    assert p.coef.shape == ref.coef_.shape  # (1, d) for two classes, (K, d) otherwise
    assert np.array_equal(p.predict(t.test.x).numpy(), pred)
    assert p.accuracy == pytest.approx(float((pred == t.test.y.numpy()).mean()))
    assert np.abs(p.coef.numpy() - ref.coef_).max() < COEF_TOL
    assert np.abs(p.intercept.numpy() - ref.intercept_).max() < COEF_TOL


def test_ten_classes_match_scikit_learn():
    g = torch.Generator().manual_seed(0)
    centers = 2 * torch.randn(10, 12, generator=g)
    y = torch.arange(600) % 10
    x = centers[y] + 3 * torch.randn(600, 12, generator=g)
    p = linear_probe(x[:400], y[:400], x[400:], y[400:])
    ref, pred = _sklearn(x[:400], y[:400], x[400:])
    assert np.array_equal(p.predict(x[400:]).numpy(), pred)
    assert np.abs(p.coef.numpy() - ref.coef_).max() < COEF_TOL
    assert 0.3 < p.accuracy < 1.0


def test_hand_solved_binary_case():
    """x = ±1 with labels 1 / 0, n points each: by symmetry b = 0 and the optimum of
    ½w² + Σ log(1 + e^{−w}) (2n terms) solves w = 2n·σ(−w)."""
    n = 5
    x = torch.tensor([[1.0]] * n + [[-1.0]] * n, dtype=torch.float64)
    y = torch.tensor([1] * n + [0] * n)
    coef, b, _, grad = fit_logistic(x, y, 2)
    lo, hi = 0.0, 2.0 * n
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid < 2 * n / (1 + math.exp(mid)) else (lo, mid)
    assert float(coef[0, 0]) == pytest.approx(lo, abs=1e-6)
    assert abs(float(b[0])) < 1e-8 and grad < 1e-6


def test_standardize_uses_train_statistics_and_keeps_constant_columns():
    train = torch.tensor([[1.0, 3.0], [3.0, 3.0]], dtype=torch.float64)
    test = torch.tensor([[5.0, 4.0]], dtype=torch.float64)
    ztr, zte, mean, scale = standardize(train, test)
    assert torch.equal(mean, torch.tensor([2.0, 3.0], dtype=torch.float64))
    assert torch.equal(scale, torch.tensor([1.0, 1.0], dtype=torch.float64))  # ddof 0; const -> 1
    assert torch.equal(zte, torch.tensor([[3.0, 1.0]], dtype=torch.float64))


def test_bad_input_is_one_line():
    x, y = torch.randn(10, 3), torch.arange(10) % 2
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(DataError, match=r"non-finite values in 1 row") as e:
        linear_probe(bad, y, x, y)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="non-finite"):
        linear_probe(x, y, x * float("inf"), y)
    with pytest.raises(ConfigError, match="C must be > 0"):
        fit_logistic(x, y, C=0.0)
    with pytest.raises(DataError, match="labels"):
        fit_logistic(x, y[:9])
