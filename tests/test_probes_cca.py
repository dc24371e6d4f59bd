"""CCA, SVCCA and PWCCA (probes/cca.py): against an independent generalized-eigenvalue
computation, known answers, invariances, the SVD truncation, PWCCA's weighting,
gradients and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.probes.cca import (
    canonical_correlations,
    cca_similarity,
    pwcca,
    svcca,
    svd_reduce,
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


def _reference_rho(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """ρ² are the eigenvalues of Σxx⁻¹ Σxy Σyy⁻¹ Σyx (numpy, independent of the SVD path)."""
    x = x.numpy() - x.numpy().mean(0)
    y = y.numpy() - y.numpy().mean(0)
    sxx, syy, sxy = x.T @ x, y.T @ y, x.T @ y
    m = np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)
    ev = np.sort(np.linalg.eigvals(m).real)[::-1][: min(x.shape[1], y.shape[1])]
    return np.sqrt(np.clip(ev, 0, 1))


def test_canonical_correlations_match_the_eigenvalue_reference():
    g = _g(0)
    x = torch.randn(60, 4, generator=g, dtype=torch.float64)
    y = x[:, :3] @ torch.randn(3, 5, generator=g, dtype=torch.float64)
    y = y + torch.randn(60, 5, generator=g, dtype=torch.float64)
    rho = canonical_correlations(x, y)
    assert rho.shape == (4,)
    assert np.allclose(rho.numpy(), _reference_rho(x, y), atol=1e-8)
    # one dimension each: |Pearson r|
    a, b = x[:, :1], -2 * x[:, :1] + y[:, :1]
    r = np.corrcoef(a[:, 0].numpy(), b[:, 0].numpy())[0, 1]
    assert float(canonical_correlations(a, b)[0]) == pytest.approx(abs(r), rel=1e-10)


def test_cca_invariant_to_invertible_maps_and_exact_on_linear_copies():
    g = _g(1)
    x = torch.randn(50, 4, generator=g, dtype=torch.float64)
    y = torch.randn(50, 3, generator=g, dtype=torch.float64) + x[:, :3]
    a = torch.randn(4, 4, generator=g, dtype=torch.float64) + 3 * torch.eye(4)
    assert torch.allclose(canonical_correlations(x @ a + 1.0, y), canonical_correlations(x, y))
    assert torch.allclose(canonical_correlations(x, x @ a), torch.ones(4, dtype=torch.float64))
    # SVCCA (99% variance) and PWCCA of a representation with itself: 1
    assert float(svcca(x, x @ a)) == pytest.approx(1.0, abs=1e-9)
    assert float(pwcca(x, x @ a)) == pytest.approx(1.0, abs=1e-9)


def test_svd_reduce_keeps_the_stated_variance():
    g = _g(2)
    q, _ = torch.linalg.qr(torch.randn(200, 5, generator=g, dtype=torch.float64))
    scales = torch.tensor([10.0, 5.0, 1.0, 0.3, 0.01], dtype=torch.float64)
    x = (q - q.mean(0)) * scales  # singular values ≈ scales (columns centred, orthogonal-ish)
    s = torch.linalg.svdvals(x - x.mean(0))
    frac = (s.square().cumsum(0) / s.square().sum()).tolist()
    for variance in (0.5, 0.99, 0.999, 1.0):
        k = next(i + 1 for i, f in enumerate(frac) if f >= variance - 1e-12)
        assert svd_reduce(x, variance=variance).shape == (200, k)
    red = svd_reduce(x, dims=2)
    assert red.shape == (200, 2)
    assert torch.allclose(torch.linalg.svdvals(red), s[:2])
    r = cca_similarity(x, x[:, :3], method="svcca", variance=0.99)
    assert r.dims[0] == svd_reduce(x, variance=0.99).shape[1] and r.variance == 0.99


def test_pwcca_weights_the_directions_that_carry_the_representation():
    """x = [shared·a, noise·b], y = [shared + small noise, other]: CCA gives ρ ≈ (1, ~0);
    PWCCA weights them by how much of x's neurons each canonical variate accounts for."""
    g = _g(3)
    n = 400
    s, e, o, w = (torch.randn(n, generator=g, dtype=torch.float64) for _ in range(4))
    y = torch.stack([s + 0.05 * w, o], 1)
    small_shared = torch.stack([s, 10 * e], 1)
    big_shared = torch.stack([10 * s, e], 1)
    mean_rho = float(canonical_correlations(small_shared, y).mean())
    assert 0.45 < mean_rho < 0.6
    assert float(pwcca(small_shared, y, side="x")) < 0.2 < mean_rho
    assert float(pwcca(big_shared, y, side="x")) > 0.85
    res = cca_similarity(big_shared, y, method="pwcca", side="x")
    assert res.weights is not None and sum(res.weights) == pytest.approx(1.0)
    assert min(res.weights) >= 0 and res.method == "pwcca" and res.features == "flattened"
    # the weights by hand: α_i = Σ_j |<h_i, z_j>| with h_i the unit-norm canonical variates
    xc = big_shared - big_shared.mean(0)
    yc = y - y.mean(0)
    qx, _ = torch.linalg.qr(xc)
    qy, _ = torch.linalg.qr(yc)
    u, rho, _ = torch.linalg.svd(qx.T @ qy)
    h = qx @ u
    alpha = (h.T @ xc).abs().sum(1)
    want = float((alpha / alpha.sum() * rho).sum())
    assert res.value == pytest.approx(want, rel=1e-10)
    assert res.to_dict()["correlations"] == list(res.correlations)


def test_similarities_are_differentiable():
    g = _g(4)
    x = torch.randn(12, 2, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(12, 3, generator=g, dtype=torch.float64) + x.detach() @ torch.randn(
        2, 3, generator=g, dtype=torch.float64
    )
    for fn in (
        lambda a: canonical_correlations(a, y).sum(),
        lambda a: svcca(a, y, dims=2),
        lambda a: pwcca(a, y),
    ):
        assert _gradcheck(fn, x)


def test_bad_input():
    g = _g(5)
    x = torch.randn(10, 6, generator=g)
    with pytest.raises(ConfigError, match="more examples than"):
        canonical_correlations(x, torch.randn(10, 5, generator=g))
    with pytest.raises(ConfigError, match="same examples"):
        svcca(x, torch.randn(9, 2, generator=g))
    with pytest.raises(ConfigError, match="variance must be in"):
        svd_reduce(x, variance=1.5)
    with pytest.raises(ConfigError, match="give variance"):
        svd_reduce(x, variance=None)
    with pytest.raises(ConfigError, match="dims must be in"):
        svd_reduce(x, variance=None, dims=7)
    with pytest.raises(ConfigError, match="rank 0"):
        canonical_correlations(torch.ones(10, 2), x[:, :2])
    with pytest.raises(ConfigError, match="unknown method"):
        cca_similarity(x[:, :2], x[:, 2:4], method="cka")
    with pytest.raises(ConfigError, match="unknown side"):
        pwcca(x[:, :2], x[:, 2:4], side="left")
