"""Virgo (Li et al. 2023): per-layer GCN variances from the graph, hand-checked, and
forward/backward variance kept better than Xavier's on an SBM graph."""

import math

import pytest
import torch

from weightlab.data.graphs import Graph, load_sbm, normalized_adjacency
from weightlab.errors import ConfigError
from weightlab.init import initialize
from weightlab.init.registry import get_initializer
from weightlab.init.virgo import propagation_energies, virgo_variances
from weightlab.models.gcn import GCN, layer_variances, mean_abs_log_ratio


def _two_nodes():
    a = normalized_adjacency(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # all entries 1/2
    x = torch.tensor([[1.0, 3.0], [3.0, 5.0]])  # per-node means u = (2, 4)
    return a, x


def test_energies_by_hand():
    a, x = _two_nodes()
    # Â u = (3, 3), Â² u = (3, 3): energies 20, 18, 18
    assert propagation_energies(a, x.mean(1), 2) == pytest.approx([20.0, 18.0, 18.0])
    assert propagation_energies(a, torch.ones(2), 1) == pytest.approx([2.0, 2.0])


def test_variances_by_hand():
    path = torch.tensor([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]])
    a = normalized_adjacency(path).double()
    x = torch.tensor([[1.0, 3.0], [3.0, 5.0], [0.0, 0.0]])  # per-node means u = (2, 4, 0)
    u, one = x.double().mean(1), torch.ones(3, dtype=torch.float64)
    c = [float((torch.linalg.matrix_power(a, k) @ u).square().sum()) for k in range(4)]
    cb = [float((torch.linalg.matrix_power(a, k) @ one).square().sum()) for k in range(4)]
    widths = [2, 4, 5, 3]  # three layers, 3 classes
    fwd = virgo_variances(a, x, widths, direction="forward")
    bwd = virgo_variances(a, x, widths, direction="backward")
    assert fwd == pytest.approx([2 / 2, 2 / 4 * c[1] / c[2], 2 / 5 * c[2] / c[3]])
    # layer l < L: 2/m_l · c'_{L-l}/c'_{L-l+1}; layer L: c'_0 / ((C-1) c'_1)
    assert bwd == pytest.approx([2 / 4 * cb[2] / cb[3], 2 / 5 * cb[1] / cb[2], 3 / (2 * cb[1])])
    both = virgo_variances(a, x, widths)
    assert both == pytest.approx([2 / (1 / f + 1 / b) for f, b in zip(fwd, bwd, strict=True)])
    mean = virgo_variances(a, x, widths, mean="arithmetic")
    assert mean == pytest.approx([(f + b) / 2 for f, b in zip(fwd, bwd, strict=True)])


def test_scheme_draws_the_formula_variance_on_a_gcn():
    d = load_sbm(n_nodes=200, n_classes=4, train_per_class=10, val_size=20)
    a, x = d.info["adjacency"], d.info["features"]
    widths = [32, 256, 256, 4]
    m = GCN(a, x, widths)
    ctxs = initialize(m, "virgo", seed=0, graph=Graph(a, x, d.train.y), dist="normal")
    want = virgo_variances(a, x, widths)
    assert [c.name for c in ctxs] == [f"layers.{i}.weight" for i in range(3)]
    for layer, v in zip(m.layers, want, strict=True):
        got = float(layer.weight.double().var())
        assert got == pytest.approx(v, rel=0.1)
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    m2 = GCN(a, x, widths)  # a bare adjacency plus data=features gives the same draw
    initialize(m2, "virgo", seed=0, graph=a, data=x, dist="normal")
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), m2.parameters(), strict=True))
    uni = GCN(a, x, widths)
    initialize(uni, "virgo", seed=0, graph=a, data=x)
    bound = math.sqrt(3 * want[1])
    assert float(uni.layers[1].weight.abs().max()) <= bound + 1e-6


def test_virgo_keeps_variance_better_than_xavier_on_an_sbm_graph():
    d = load_sbm(n_nodes=200, n_classes=4, train_per_class=10, val_size=40)
    a, x = d.info["adjacency"], d.info["features"]
    widths = [32] + [32] * 7 + [4]
    scores = {}
    for scheme in ("glorot", "virgo"):
        f_s, b_s = [], []
        for seed in range(2):
            m = GCN(a, x, widths)
            initialize(m, scheme, seed=seed, graph=a, data=x)
            fwd, bwd = layer_variances(m, d.train.x, d.train.y)
            f_s.append(mean_abs_log_ratio(fwd))
            b_s.append(mean_abs_log_ratio(bwd))
        scores[scheme] = (sum(f_s) / 2, sum(b_s) / 2)
    assert scores["virgo"][0] < scores["glorot"][0]
    assert scores["virgo"][1] < scores["glorot"][1]


def test_bad_input_is_one_line():
    d = load_sbm(n_nodes=60, n_classes=2, train_per_class=5, val_size=10)
    m = GCN(d.info["adjacency"], d.info["features"], [32, 8, 2])
    with pytest.raises(ConfigError, match="needs graph"):
        initialize(m, "virgo", seed=0)
    with pytest.raises(ConfigError, match="node features"):
        initialize(m, "virgo", seed=0, graph=d.info["adjacency"])
    with pytest.raises(ConfigError, match="mean"):
        get_initializer("virgo", mean="geometric")
    with pytest.raises(ConfigError, match="undefined"):
        initialize(m, "virgo", seed=0, graph=d.info["adjacency"], data=torch.zeros(60, 32))
