"""CKA (probes/cka.py): known answers against the direct HSIC formulas, unbiasedness of
HSIC_u against a closed form, the bias of debiased vs biased CKA, invariances, the batched
all-pairs matrix, the minibatch estimator, undefined results and bad input."""

from __future__ import annotations

import itertools

import pytest
import torch

from weightlab.errors import ConfigError, DataError
from weightlab.probes.cka import (
    CKAMatrix,
    MinibatchCKA,
    cka,
    cka_matrix,
    cka_tensor,
    hsic,
    hsic_pairs,
    linear_cka,
    linear_gram,
    rbf_cka,
    rbf_gram,
)


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gradcheck(fn, *inputs: torch.Tensor, directions: int = 3) -> bool:
    """Autograd's directional derivatives equal central finite differences (float64) along
    seeded random directions — gradcheck's fast mode without importing its machinery
    (``torch.autograd.gradcheck`` pulls in sympy, ~5 s)."""
    g = torch.Generator().manual_seed(123)
    grads = torch.autograd.grad(fn(*inputs), inputs)
    eps = 1e-6
    for _ in range(directions):
        vs = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in inputs]
        with torch.no_grad():
            plus = fn(*(t + eps * v for t, v in zip(inputs, vs, strict=True)))
            minus = fn(*(t - eps * v for t, v in zip(inputs, vs, strict=True)))
        numeric = float((plus - minus) / (2 * eps))
        analytic = float(sum((gr * v).sum() for gr, v in zip(grads, vs, strict=True)))
        if abs(numeric - analytic) > 1e-5 + 1e-4 * abs(numeric):
            return False
    return True


def _direct_hsic_b(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:  # noqa: E741
    """Gretton et al. 2005, Eq. 4, with an explicit centring matrix."""
    n = k.shape[0]
    h = torch.eye(n, dtype=torch.float64) - torch.full((n, n), 1.0 / n, dtype=torch.float64)
    return torch.trace(k @ h @ l @ h) / (n - 1) ** 2


def _u_statistic(k: torch.Tensor, l: torch.Tensor) -> float:  # noqa: E741
    """HSIC_u as the U-statistic it is (Song et al. 2012, Theorem 2): the mean over ordered
    distinct quadruples of k_ij l_ij + k_ij l_qr − 2 k_ij l_iq."""
    n = k.shape[0]
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += float(k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q])
        count += 1
    return total / count


def _pair(n: int, d1: int, d2: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = _g(seed)
    x = torch.randn(n, d1, generator=g, dtype=torch.float64)
    m = torch.randn(d1, d2, generator=g, dtype=torch.float64)
    return x, x @ m + 0.7 * torch.randn(n, d2, generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------- formulas


def test_linear_cka_equals_direct_hsic_formula():
    for n, d1, d2 in ((7, 3, 5), (40, 6, 4), (10, 30, 25)):  # feature and Gram paths
        x, y = _pair(n, d1, d2, n)
        k, l = x @ x.T, y @ y.T  # noqa: E741  (uncentred: H does the centring)
        direct = _direct_hsic_b(k, l) / torch.sqrt(_direct_hsic_b(k, k) * _direct_hsic_b(l, l))
        assert torch.allclose(linear_cka(x, y), direct, rtol=1e-12, atol=0)
        # Kornblith et al. 2019, Eq. 5 (feature form)
        xc, yc = x - x.mean(0), y - y.mean(0)
        eq5 = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
        assert torch.allclose(linear_cka(x, y), eq5, rtol=1e-12, atol=0)


def test_hsic_u_equals_the_u_statistic_and_both_paths_agree():
    x, y = _pair(7, 3, 4, 1)
    k, l = x @ x.T, y @ y.T  # noqa: E741
    assert float(hsic(k, l, debiased=True)) == pytest.approx(_u_statistic(k, l), rel=1e-10)
    # RBF Grams too (no linear structure to lean on)
    kr, lr = rbf_gram(x)[0], rbf_gram(y)[0]
    assert float(hsic(kr, lr, debiased=True)) == pytest.approx(_u_statistic(kr, lr), rel=1e-10)
    # the feature-space debiased path (d small) equals the Gram path (d large after padding)
    for n, d1, d2 in ((12, 3, 2), (12, 20, 30)):
        x, y = _pair(n, d1, d2, 2)
        k, l = linear_gram(x), linear_gram(y)  # noqa: E741
        gram_path = hsic(k, l, debiased=True) / torch.sqrt(
            hsic(k, k, debiased=True) * hsic(l, l, debiased=True)
        )
        assert torch.allclose(linear_cka(x, y, debiased=True), gram_path, rtol=1e-10)


def test_hsic_u_is_invariant_to_centring_and_hsic_pairs_matches_hsic():
    x, y = _pair(9, 4, 3, 3)
    shifted = x + torch.tensor([3.0, -1.0, 2.0, 0.5], dtype=torch.float64)
    a = hsic(x @ x.T, y @ y.T, debiased=True)
    b = hsic(shifted @ shifted.T, y @ y.T, debiased=True)
    assert torch.allclose(a, b, rtol=1e-9)
    ks = torch.stack([linear_gram(t) for t in (x, y, x * y[:, :1])])
    for debiased in (False, True):
        m = hsic_pairs(ks, debiased=debiased)
        for i, j in itertools.product(range(3), repeat=2):
            assert torch.allclose(m[i, j], hsic(ks[i], ks[j], debiased=debiased), rtol=1e-12)
        m2 = hsic_pairs(ks[:2], ks[1:], debiased=debiased)
        assert torch.allclose(m2, m[:2, 1:], rtol=1e-12)


def test_linear_cka_gradcheck_both_estimators_and_paths():
    for d1, d2 in ((2, 3), (7, 6)):  # feature path, Gram path (n = 6)
        x, y = _pair(6, d1, d2, 4)
        x.requires_grad_(True)
        y.requires_grad_(True)
        for debiased in (False, True):
            assert _gradcheck(lambda a, b, d=debiased: linear_cka(a, b, debiased=d), x, y)
    # RBF with fixed bandwidths (the median bandwidth is held constant under autograd)
    x, y = _pair(6, 3, 2, 5)
    x.requires_grad_(True)
    assert _gradcheck(lambda a: rbf_cka(a, y, sigma=(1.3, 2.0), debiased=True), x)
    # the check can fail: detach half of a product (gradient off by a factor 2)
    assert not _gradcheck(lambda a: (a.detach() * a).sum(), x)


def test_cka_loss_gradient_step_increases_alignment():
    x, y = _pair(50, 5, 5, 6)
    z = torch.randn(50, 5, generator=_g(7), dtype=torch.float64, requires_grad=True)
    before = float(linear_cka(z.detach(), y))
    for _ in range(20):
        loss = 1 - linear_cka(z, y)
        (g,) = torch.autograd.grad(loss, z)
        z = (z - 5.0 * g).detach().requires_grad_(True)
    assert float(linear_cka(z.detach(), y)) > before + 0.2


# --------------------------------------------------------------------------- statistics


def test_hsic_u_unbiased_monte_carlo_against_closed_form():
    """x ~ N(0, I_3), y = x M + e: the linear-kernel population HSIC is ‖Cov(x, y)‖_F² =
    ‖M‖_F² (HSIC_u needs no constants; HSIC_b carries its O(1/n) bias)."""
    g = _g(8)
    m = torch.tensor([[1.0, 0.5], [0.0, -1.0], [0.5, 0.5]], dtype=torch.float64)
    target = float(m.square().sum())  # 2.75
    n, trials = 8, 4000
    x = torch.randn(trials, n, 3, generator=g, dtype=torch.float64)
    y = x @ m + torch.randn(trials, n, 2, generator=g, dtype=torch.float64)
    k, l = x @ x.transpose(1, 2), y @ y.transpose(1, 2)  # noqa: E741
    hu = hsic(k, l, debiased=True)
    hb = hsic(k, l, debiased=False)
    se = float(hu.std() / trials**0.5)
    assert abs(float(hu.mean()) - target) < 4 * se
    assert abs(float(hb.mean()) - target) > 4 * float(hb.std() / trials**0.5)


def test_debiased_cka_has_less_bias_than_biased():
    """Population linear CKA = ‖Σ_xy‖_F² / (‖Σ_xx‖_F ‖Σ_yy‖_F) for x ~ N(0, I_4),
    y = x M + σe; Monte-Carlo means at n = 6..30."""
    g = _g(9)
    d1, d2, s = 4, 3, 1.0
    m = torch.randn(d1, d2, generator=g, dtype=torch.float64)
    syy = m.T @ m + s**2 * torch.eye(d2, dtype=torch.float64)
    pop = float(m.square().sum() / (torch.eye(d1).norm() * syy.norm()))
    trials = 600
    for n in (6, 10, 20, 30):
        x = torch.randn(trials, n, d1, generator=g, dtype=torch.float64)
        y = x @ m + s * torch.randn(trials, n, d2, generator=g, dtype=torch.float64)
        k, l = x @ x.transpose(1, 2), y @ y.transpose(1, 2)  # noqa: E741
        vals = {}
        for debiased in (False, True):
            hxy, hxx, hyy = (hsic(a, b, debiased=debiased) for a, b in ((k, l), (k, k), (l, l)))
            ok = (hxx > 0) & (hyy > 0)
            vals[debiased] = (hxy[ok] / torch.sqrt(hxx[ok] * hyy[ok])).mean()
        assert abs(float(vals[True]) - pop) < abs(float(vals[False]) - pop), n


def test_linear_cka_invariances():
    x, y = _pair(30, 6, 5, 10)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=_g(11), dtype=torch.float64))
    for debiased in (False, True):
        base = linear_cka(x, y, debiased=debiased)
        assert torch.allclose(linear_cka(x @ q, y, debiased=debiased), base, rtol=1e-10)
        assert torch.allclose(linear_cka(3.7 * x, 0.2 * y, debiased=debiased), base, rtol=1e-10)
        assert torch.allclose(linear_cka(x + 5.0, y, debiased=debiased), base, rtol=1e-9)
        assert torch.allclose(linear_cka(x, x, debiased=debiased), torch.tensor(1.0).double())
    # not invariant to an invertible non-orthogonal map (Kornblith et al. 2019, Sec. 2)
    a = torch.diag(torch.tensor([1.0, 10.0, 0.1, 1.0, 1.0, 3.0], dtype=torch.float64))
    assert abs(float(linear_cka(x @ a, y) - linear_cka(x, y))) > 1e-3
    # RBF CKA with the median bandwidth: invariant to rotation and isotropic scaling
    base = rbf_cka(x, y)
    assert torch.allclose(rbf_cka(2.5 * (x @ q), y), base, rtol=1e-9)


# --------------------------------------------------------------------------- typed results


def test_cka_typed_result_and_matrix_agree_with_tensors():
    x, y = _pair(25, 5, 4, 12)
    r = cka(x, y, kernel="rbf", estimator="biased")
    assert r.defined and r.features == "flattened" and r.kernel == "rbf" and r.n == 25
    assert r.value == pytest.approx(float(rbf_cka(x, y)), rel=1e-12)
    assert r.sigma_frac == 0.8 and len(r.sigma) == 2
    feats = {"a": x, "b": y, "c": torch.tanh(x)}
    for kernel in ("linear", "rbf"):
        for est in ("biased", "debiased"):
            m = cka_matrix(feats, kernel=kernel, estimator=est)
            assert isinstance(m, CKAMatrix) and m.rows == ("a", "b", "c")
            for i, j in itertools.product("abc", repeat=2):
                want = cka_tensor(feats[i], feats[j], kernel=kernel, debiased=est == "debiased")
                assert m.value(i, j) == pytest.approx(float(want), rel=1e-9)
    d = m.to_dict()
    assert d["features"] == "flattened" and d["undefined"] == [] and len(d["values"]) == 3
    # 3-D inputs are flattened per example
    z = torch.randn(25, 2, 3, generator=_g(13), dtype=torch.float64)
    assert cka(z, x).value == pytest.approx(cka(z.reshape(25, 6), x).value, rel=1e-12)


def test_minibatch_cka_averages_hsic_before_the_ratio():
    x, y = _pair(40, 5, 4, 14)
    m = cka_matrix({"x": x}, {"y": y}, batch_size=10)
    num = den_x = den_y = 0.0
    for s in range(0, 40, 10):
        kx, ky = linear_gram(x[s : s + 10]), linear_gram(y[s : s + 10])
        num += float(hsic(kx, ky, debiased=True)) / 4
        den_x += float(hsic(kx, kx, debiased=True)) / 4
        den_y += float(hsic(ky, ky, debiased=True)) / 4
    assert m.batches == 4 and m.n == 40
    assert m.values[0][0] == pytest.approx(num / (den_x * den_y) ** 0.5, rel=1e-10)
    assert m.values[0][0] != pytest.approx(float(linear_cka(x, y, debiased=True)), rel=1e-3)
    acc = MinibatchCKA()
    for s in range(0, 40, 10):
        acc.update({"x": x[s : s + 10], "y": y[s : s + 10]})
    full = acc.result()
    assert full.value("x", "y") == pytest.approx(m.values[0][0], rel=1e-10)
    assert full.value("x", "x") == pytest.approx(1.0)
    # a last batch of fewer than 4 examples is dropped (n says so); of 4 or more, kept
    x44, y44 = _pair(44, 5, 4, 16)
    assert cka_matrix({"x": x44[:43]}, batch_size=10).n == 40
    kept = cka_matrix({"x": x44}, {"y": y44}, batch_size=10)
    assert kept.n == 44 and kept.batches == 5
    rbf = cka_matrix({"x": x}, {"y": y}, batch_size=20, kernel="rbf")
    halves = [rbf_gram(t[s : s + 20])[0] for t in (x, y) for s in (0, 20)]
    num = sum(float(hsic(halves[i], halves[i + 2], debiased=True)) for i in (0, 1))
    dx = sum(float(hsic(halves[i], halves[i], debiased=True)) for i in (0, 1))
    dy = sum(float(hsic(halves[i], halves[i], debiased=True)) for i in (2, 3))
    assert rbf.values[0][0] == pytest.approx(num / (dx * dy) ** 0.5, rel=1e-10)


def test_undefined_when_self_hsic_u_not_positive():
    """Equidistant examples (one-hot rows: a regular simplex) have a constant off-diagonal
    centred Gram, whose HSIC_u with anything is exactly 0 (Song et al. 2012, Eq. 5)."""
    bad = torch.eye(6, dtype=torch.float64)
    k = linear_gram(bad)
    assert abs(float(hsic(k, k, debiased=True))) < 1e-15
    y = torch.randn(6, 3, generator=_g(15), dtype=torch.float64)
    r = cka(bad, y)
    assert r.value is None and "self-HSIC_u <= 0" in r.reason and "x:" in r.reason
    with pytest.raises(ConfigError, match="undefined"):
        r.require()
    with pytest.raises(ConfigError, match="self-HSIC_u <= 0"):
        linear_cka(bad, y, debiased=True)  # Gram path (d = 6)
    with pytest.raises(ConfigError, match="self-HSIC_u <= 0"):
        linear_cka(bad[:, :5] - bad[:, 5:], y, debiased=True)
    with pytest.raises(ConfigError, match="self-HSIC_u <= 0"):
        rbf_cka(bad, y, debiased=True)
    m = cka_matrix({"bad": bad, "y": y})
    assert m.values[0][0] is None and m.values[1][1] == pytest.approx(1.0)
    assert set(m.reasons) == {(0, 0), (0, 1), (1, 0)}
    with pytest.raises(ConfigError, match="undefined"):
        m.tensor()
    t = m.tensor(undefined=-1.0)
    assert not torch.isnan(t).any() and t[0, 0] == -1.0
    # float32 Grams (the minibatch path) still see it
    m32 = cka_matrix({"bad": bad.float(), "y": y.float()}, batch_size=6)
    assert m32.values[0][1] is None and m32.values[1][1] is not None
    # the biased self-HSIC is > 0 here; it is 0 only for constant features
    assert cka(bad, y, estimator="biased").defined
    const = torch.ones(6, 2, dtype=torch.float64)
    r = cka(const, y, estimator="biased")
    assert r.value is None and "self-HSIC_b" in r.reason


def test_bad_input():
    x = torch.randn(3, 4)
    with pytest.raises(ConfigError, match="at least 4 examples"):
        linear_cka(x, x)
    with pytest.raises(ConfigError, match="at least 4 examples"):
        cka(x, x)
    with pytest.raises(ConfigError, match="at least 4 examples"):
        cka_matrix({"a": torch.randn(8, 2)}, batch_size=3)
    with pytest.raises(ConfigError, match="same examples"):
        linear_cka(torch.randn(5, 2), torch.randn(6, 2))
    with pytest.raises(ConfigError, match="unknown kernel"):
        cka(torch.randn(5, 2), torch.randn(5, 2), kernel="poly")
    with pytest.raises(ConfigError, match="unknown estimator"):
        cka(torch.randn(5, 2), torch.randn(5, 2), estimator="unbiased")
    with pytest.raises(ConfigError, match="unknown features"):
        cka(torch.randn(5, 2), torch.randn(5, 2), features="mean")
    with pytest.raises(ConfigError, match="bandwidth is 0"):
        rbf_cka(torch.zeros(6, 2), torch.randn(6, 2))
    for bad in (float("nan"), float("inf")):
        x = torch.randn(6, 3)
        x[2, 1] = bad
        with pytest.raises(DataError, match="features of a hold non-finite"):
            cka_matrix({"a": x, "b": torch.randn(6, 2)})
        with pytest.raises(DataError, match="features of a hold non-finite"):
            cka_matrix({"a": x}, kernel="rbf")
        with pytest.raises(DataError, match="non-finite"):
            cka(x, torch.randn(6, 2))
        with pytest.raises(DataError, match="non-finite"):
            linear_cka(x, torch.randn(6, 2))
        with pytest.raises(DataError, match="non-finite"):
            rbf_cka(x, torch.randn(6, 2))
    with pytest.raises(ConfigError, match="no layer 'z'"):
        cka_matrix({"a": torch.randn(5, 2)}).value("z", "a")
    acc = MinibatchCKA()
    with pytest.raises(ConfigError, match="no minibatch"):
        acc.result()
    acc.update({"a": torch.randn(5, 2)})
    with pytest.raises(ConfigError, match="same layers"):
        acc.update({"b": torch.randn(5, 2)})
