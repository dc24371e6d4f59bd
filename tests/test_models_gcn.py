"""The SBM generator and the plain-torch GCN (Kipf & Welling 2017, Eq. 2)."""

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.data.graphs import load_sbm, normalized_adjacency, sbm_graph
from weightlab.errors import ConfigError, DataError
from weightlab.models.gcn import GCN, layer_variances, mean_abs_log_ratio


def test_normalized_adjacency_by_hand():
    a = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # both degrees 2 after self-loops
    assert torch.allclose(normalized_adjacency(a), torch.full((2, 2), 0.5))
    path = torch.tensor([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]])  # degrees 2, 3, 2
    got = normalized_adjacency(path)
    assert got[0, 1] == pytest.approx(1 / (2 * 3) ** 0.5) and got[0, 2] == 0
    assert got[1, 1] == pytest.approx(1 / 3) and torch.allclose(got, got.T)


def test_sbm_is_seeded_symmetric_and_assortative():
    g = sbm_graph(200, 4, p_in=0.2, p_out=0.01, n_features=8, seed=1)
    h = sbm_graph(200, 4, p_in=0.2, p_out=0.01, n_features=8, seed=1)
    assert torch.equal(g.adjacency, h.adjacency) and torch.equal(g.features, h.features)
    assert not torch.equal(g.adjacency, sbm_graph(200, 4, 0.2, 0.01, 8, seed=2).adjacency)
    assert torch.allclose(g.adjacency, g.adjacency.T)
    edges = (g.adjacency > 0) & ~torch.eye(200, dtype=torch.bool)
    same = g.labels[:, None] == g.labels[None, :]
    within = edges[same].float().mean()
    between = edges[~same].float().mean()
    assert 0.15 < within < 0.25 and between < 0.02  # p_in, p_out
    assert torch.bincount(g.labels).tolist() == [50] * 4


def test_load_sbm_splits_are_disjoint_and_cover_the_graph():
    d = load_dataset("sbm", n_nodes=120, n_classes=3, train_per_class=5, val_size=20)
    idx = torch.cat([d.train.x, d.val.x, d.test.x]).reshape(-1).long()
    assert sorted(idx.tolist()) == list(range(120))
    assert torch.bincount(d.train.y).tolist() == [5, 5, 5]
    assert d.info["adjacency"].shape == (120, 120) and d.info["features"].shape == (120, 32)
    with pytest.raises(DataError, match="no test"):
        load_sbm(n_nodes=20, n_classes=2, train_per_class=5, val_size=10)


def test_gcn_forward_matches_the_formula():
    a = normalized_adjacency(
        torch.tensor([[0.0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]])
    )
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    m = GCN(a, x, [3, 5, 2])
    w0, b0 = m.layers[0].weight, m.layers[0].bias
    w1, b1 = m.layers[1].weight, m.layers[1].bias
    want = a @ torch.relu(a @ x @ w0.T + b0) @ w1.T + b1
    out = m(torch.tensor([[2.0], [0.0]]))
    assert torch.allclose(out, want[[2, 0]], atol=1e-6)
    with pytest.raises(ConfigError, match="features"):
        GCN(a, torch.randn(3, 3), [3, 2])


def test_layer_variances_and_log_ratio():
    assert mean_abs_log_ratio([1.0, 2.0, 1.0]) == pytest.approx(0.6931, abs=1e-4)
    assert mean_abs_log_ratio([3.0, 3.0]) == 0
    d = load_sbm(n_nodes=80, n_classes=2, train_per_class=5, val_size=10)
    m = GCN(d.info["adjacency"], d.info["features"], [32, 16, 16, 2])
    fwd, bwd = layer_variances(m, d.train.x, d.train.y)
    assert len(fwd) == len(bwd) == 3 and all(v > 0 for v in fwd + bwd)
    zs = m.propagate()
    assert fwd[0] == pytest.approx(float(zs[0].detach().double().var()), rel=1e-4)
