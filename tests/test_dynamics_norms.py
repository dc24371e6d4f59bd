"""Path norm and two-layer norm (weightlab/dynamics/norms.py): hand-computed cases, path
enumeration, member dims, probes, and population == loop."""

from __future__ import annotations

import itertools

import pytest
import torch

from weightlab.dynamics.norms import (
    path_norm,
    path_norm_probe,
    two_layer_norm,
    two_layer_norm_probe,
)
from weightlab.errors import ConfigError
from weightlab.models import build
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP


def test_path_norm_hand_computed():
    # 2 inputs -> 2 hidden -> 1 output. Paths: |w1_ji| * |w2_j| summed over i, j.
    w1 = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    w2 = torch.tensor([[-1.0, 2.0]])
    # hidden 0: (1 + 2) * 1 = 3; hidden 1: (0.5 + 3) * 2 = 7
    assert float(path_norm([w1, w2])) == pytest.approx(10.0)
    # one layer: sum of absolute entries
    assert float(path_norm([w1])) == pytest.approx(6.5)


def test_path_norm_equals_sum_over_enumerated_paths():
    g = torch.Generator().manual_seed(0)
    ws = [
        torch.randn(4, 3, generator=g),
        torch.randn(5, 4, generator=g),
        torch.randn(2, 5, generator=g),
    ]
    total = 0.0
    for i, j, k, o in itertools.product(range(3), range(4), range(5), range(2)):
        total += abs(ws[0][j, i] * ws[1][k, j] * ws[2][o, k])
    assert float(path_norm(ws)) == pytest.approx(float(total), rel=1e-6)


def test_path_norm_is_rescaling_invariant():
    # scaling a ReLU unit's input weights by c and its output weights by 1/c keeps the function
    # and the path norm
    g = torch.Generator().manual_seed(1)
    w1, w2 = (
        torch.randn(6, 3, generator=g, dtype=torch.float64),
        torch.randn(1, 6, dtype=torch.float64),
    )
    c = torch.tensor([2.0, 0.5, 3.0, 1.0, 0.1, 7.0], dtype=torch.float64)
    assert float(path_norm([w1 * c[:, None], w2 / c])) == pytest.approx(float(path_norm([w1, w2])))


def test_two_layer_norm_hand_computed():
    w = torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]])  # norms 5, 1, 1
    a = torch.tensor([2.0, -3.0, 0.0])
    assert float(two_layer_norm(w, a)) == pytest.approx((2 * 5 + 3 * 1 + 0) / 3)
    # a (k, m) readout: column l1 norms
    a2 = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 2.0, 0.5]])  # columns 2, 3, 0.5
    assert float(two_layer_norm(w, a2)) == pytest.approx((2 * 5 + 3 * 1 + 0.5 * 1) / 3)
    # a (1, m) readout is the same as (m,)
    assert float(two_layer_norm(w, a[None])) == pytest.approx(float(two_layer_norm(w, a)))


def test_member_dims_match_per_member():
    g = torch.Generator().manual_seed(2)
    w1, w2 = torch.randn(3, 2, 6, 4, generator=g), torch.randn(3, 2, 1, 6, generator=g)
    pn = path_norm([w1, w2], member_dims=2)
    tl = two_layer_norm(w1, w2, member_dims=2)
    assert pn.shape == tl.shape == (3, 2)
    for i, j in itertools.product(range(3), range(2)):
        assert float(pn[i, j]) == pytest.approx(float(path_norm([w1[i, j], w2[i, j]])), rel=1e-6)
        assert float(tl[i, j]) == pytest.approx(float(two_layer_norm(w1[i, j], w2[i, j])), rel=1e-6)


def test_bad_shapes_are_one_line_errors():
    with pytest.raises(ConfigError, match="forward order"):
        path_norm([torch.ones(3, 2), torch.ones(1, 4)])
    with pytest.raises(ConfigError, match="at least one"):
        path_norm([])
    with pytest.raises(ConfigError, match="member dims"):
        path_norm([torch.ones(3, 2)], member_dims=1)
    with pytest.raises(ConfigError, match="hidden units"):
        two_layer_norm(torch.ones(3, 2), torch.ones(4))
    with pytest.raises(ConfigError, match="member_dims"):
        path_norm([torch.ones(3, 2)], member_dims=-1)


@torch.no_grad()
def test_probes_on_a_model():
    model = build(MLP, [3, 5, 2], seed=0)
    w = [model.layers[0].weight.detach(), model.layers[1].weight.detach()]
    p = path_norm_probe(1)
    assert float(p.fn(model, None)) == pytest.approx(float(path_norm(w)))
    q = two_layer_norm_probe(1, readout_scale=5.0)
    assert float(q.fn(model, None)) == pytest.approx(float(two_layer_norm(w[0], 5.0 * w[1])))
    only_first = path_norm_probe(1, params=("layers.0.weight",))
    assert float(only_first.fn(model, None)) == pytest.approx(float(w[0].abs().sum()))
    with pytest.raises(ConfigError, match="match no parameter"):
        path_norm_probe(1, params=("nope*",)).fn(model, None)
    with pytest.raises(ConfigError, match="no parameter"):
        two_layer_norm_probe(1, first="x.weight").fn(model, None)
    with pytest.raises(ConfigError, match="readout_scale"):
        two_layer_norm_probe(1, readout_scale=0.0)


def test_population_equals_loop():
    from weightlab.data import load_dataset
    from weightlab.population import MemberSpec, Population
    from weightlab.train import train
    from weightlab.train.config import OptimConfig, TrainConfig

    data = load_dataset("teacher_linear", n_train=64, n_val=8, n_test=8, d_in=5, d_out=1)
    factory = model_factory(MLP, [5, 7, 1])
    specs = [MemberSpec(seed=s) for s in (0, 1, 2)]
    cfg = TrainConfig(epochs=10, batch_size=64, eval_every=5, optim=OptimConfig("sgd", lr=0.1))
    probes = (path_norm_probe(3), two_layer_norm_probe(3, readout_scale=7.0))
    pop = Population(factory, specs, dtype=torch.float64)
    out = {"population": [r.probes for r in pop.fit(data, cfg, probes=probes)], "loop": []}
    for spec in specs:
        model = factory(spec.seed)
        res = train(model, data, cfg, 0, seed=spec.seed, probes=probes, dtype=torch.float64)
        out["loop"].append(res.probes)
    for a, b in zip(out["population"], out["loop"], strict=True):
        assert [r["step"] for r in a] == [0, 3, 6, 9]
        for ra, rb in zip(a, b, strict=True):
            assert ra["path_norm"] == pytest.approx(rb["path_norm"], rel=1e-9)
            assert ra["two_layer_norm"] == pytest.approx(rb["two_layer_norm"], rel=1e-9)
    # training changed the norms
    assert out["loop"][0][-1]["path_norm"] != out["loop"][0][0]["path_norm"]
