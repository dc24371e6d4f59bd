"""Unit matching (Li et al. 2016, [#76]): correlations, Hungarian and semi-matching, the
lasso against scikit-learn, sparse prediction and the function-preserving permutation."""

import numpy as np
import pytest
import torch

from weightlab.errors import ConfigError, DataError
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.probes.matching import (
    apply_unit_permutations,
    bipartite_match,
    lasso,
    match_layers,
    mlp_activations,
    one_to_one_r2,
    permute_to_match,
    semi_match,
    sparse_prediction,
    unit_correlation,
    unit_permutations,
)
from weightlab.seeding import generator


def test_unit_correlation_equals_numpy_corrcoef_and_dead_units_are_zero():
    g = generator(0)
    a = torch.randn(50, 4, generator=g)
    b = torch.cat([a[:, :2] * 3 + 1, torch.randn(50, 2, generator=g), torch.ones(50, 1)], 1)
    c = unit_correlation(a, b)
    ref = np.corrcoef(a.numpy().T, b[:, :4].numpy().T)[:4, 4:]
    assert torch.allclose(c[:, :4], torch.as_tensor(ref, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(c[0, 0], torch.tensor(1.0, dtype=torch.float64))
    assert torch.equal(c[:, 4], torch.zeros(4, dtype=torch.float64))  # the constant unit
    with pytest.raises(DataError, match="same examples"):
        unit_correlation(a, b[:10])


def test_bipartite_and_semi_matching_hand_case():
    # A's unit 0 likes B's 0 most, but so does unit 1 even more; Hungarian must trade off
    corr = torch.tensor([[0.9, 0.8, 0.0], [0.95, 0.1, 0.0], [0.0, 0.0, 0.5]], dtype=torch.float64)
    assert bipartite_match(corr).tolist() == [1, 0, 2]  # 0.8 + 0.95 + 0.5 = 2.25 beats 1.5
    assert semi_match(corr).tolist() == [0, 0, 2]
    with pytest.raises(ConfigError, match="at least as many"):
        bipartite_match(corr[:, :2])


def test_lasso_equals_scikit_learn():
    from sklearn.linear_model import Lasso

    g = generator(1)
    x = torch.randn(80, 6, generator=g, dtype=torch.float64)
    y = x[:, :2] @ torch.tensor([[1.0, 0.0], [-0.5, 2.0]], dtype=torch.float64)
    y = torch.cat([y, torch.randn(80, 1, generator=g, dtype=torch.float64)], 1)
    x, y = x - x.mean(0), y - y.mean(0)
    w, _ = lasso(x, y, 0.05, iters=20000, tol=1e-12)
    ref = Lasso(alpha=0.05, fit_intercept=False, tol=1e-12, max_iter=100000).fit(x, y)
    assert np.allclose(w.numpy(), ref.coef_.T, atol=1e-6)


def test_sparse_prediction_beats_one_to_one_on_a_rotated_code():
    # B holds A's two units rotated by 45°: no single B unit explains an A unit (r² = 0.5),
    # a two-unit linear map explains it all
    g = generator(2)
    a = torch.randn(400, 2, generator=g, dtype=torch.float64)
    rot = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64) / 2**0.5
    b = a @ rot
    perm = bipartite_match(unit_correlation(a, b))
    one = one_to_one_r2(a[:300], b[:300], perm, a[300:], b[300:])
    sp = sparse_prediction(a[:300], b[:300], a[300:], b[300:], l1=1e-4)
    assert float(one.max()) < 0.7 and abs(float(one.sum()) - 1.0) < 0.1  # r² ≈ 1/2 each
    assert sp.mean_r2 > 0.999 and sp.nonzero.tolist() == [2, 2]
    assert set(sp.to_dict()) == {"mean_r2", "mean_nonzero", "l1", "iterations"}
    # a large penalty zeroes every weight: R² ≤ 0 on held-out data
    assert sparse_prediction(a[:300], b[:300], a[300:], b[300:], l1=10.0).mean_r2 <= 0.0


def _pair(seed_a=0, seed_b=1, widths=(8, 16, 12, 3)):
    return build(MLP, list(widths), seed=seed_a), build(MLP, list(widths), seed=seed_b)


def test_permute_to_match_recovers_a_hidden_permutation_and_preserves_the_function():
    a, _ = _pair()
    x = torch.randn(200, 8, generator=generator(3))
    g = generator(4)
    true = {
        "layers.0": torch.randperm(16, generator=g),
        "layers.1": torch.randperm(12, generator=g),
    }
    b = apply_unit_permutations(a, true)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-6)
    aligned = permute_to_match(b, a, x)
    for k, v in a.state_dict().items():
        assert torch.allclose(aligned.state_dict()[k], v), k
    perms = unit_permutations(b, a, x)
    assert torch.equal(perms["layers.0"][true["layers.0"]], torch.arange(16)) or torch.equal(
        true["layers.0"][perms["layers.0"]], torch.arange(16)
    )


def test_permute_to_match_two_seeds_same_function_closer_weights_models_untouched():
    a, b = _pair(widths=(8, 32, 32, 3))
    x = torch.randn(300, 8, generator=generator(5))
    before_a = {k: v.clone() for k, v in a.state_dict().items()}
    before_b = {k: v.clone() for k, v in b.state_dict().items()}
    b.train()
    aligned = permute_to_match(b, a, x)
    with torch.no_grad():
        assert torch.allclose(aligned(x), b(x), atol=1e-5)

    def dist(m):
        return sum((m.state_dict()[k] - v).pow(2).sum() for k, v in a.state_dict().items())

    assert dist(aligned) < dist(b)
    assert b.training and all(torch.equal(b.state_dict()[k], v) for k, v in before_b.items())
    assert all(torch.equal(a.state_dict()[k], v) for k, v in before_a.items())


def test_match_layers_names_dead_units_and_fractions():
    a, b = _pair(widths=(8, 16, 12, 3))
    with torch.no_grad():
        a.layers[0].weight[3].zero_()
        a.layers[0].bias[3] = -1.0  # unit 3 is dead (ReLU of -1)
    x = torch.randn(100, 8, generator=generator(6))
    m = match_layers(a, b, x)
    assert [r.name for r in m] == ["layers.0", "layers.1"]
    assert m[0].dead_a == 1 and m[0].matched_r.numel() == 15
    assert m[0].mean_matched_r <= float(m[0].semi_r.mean()) + 1e-12
    assert 0.0 <= m[0].fraction(lo=0.9) <= 1.0 and m[0].to_dict()["name"] == "layers.0"
    same = match_layers(a, a, x)
    assert all(abs(r.mean_matched_r - 1.0) < 1e-9 for r in same)
    acts = mlp_activations(a, x, post=False)
    assert acts["layers.0"][:, 3].eq(-1.0).all()


def test_different_architectures_and_non_mlp_refused():
    a, _ = _pair()
    c = build(MLP, [8, 16, 13, 3], seed=0)
    x = torch.randn(20, 8)
    with pytest.raises(ConfigError, match="architectures differ") as e:
        permute_to_match(c, a, x)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="architectures differ"):
        match_layers(a, torch.nn.Linear(8, 3), x)
    with pytest.raises(ConfigError, match="weightlab's MLP"):
        mlp_activations(torch.nn.Linear(8, 3), x)
    with pytest.raises(ConfigError, match="hidden layers: layers.0, layers.1"):
        apply_unit_permutations(a, {"layers.7": torch.arange(3)})
