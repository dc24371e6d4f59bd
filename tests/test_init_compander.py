"""The weight compander w = f(v) (Cakaj et al. 2023) as a Transform."""

import math

import pytest
import torch
from torch import nn

from weightlab.core.transforms import merge, transforms_of
from weightlab.errors import ConfigError
from weightlab.init.compander import Compander, attach_compander, near_zero_share
from weightlab.models import build
from weightlab.models.mlp import MLP


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_function_by_hand():
    c = Compander(mu=10.0, knee=1.0)
    c.bound.fill_(2.0)
    v = torch.tensor([0.0, 2.0, -2.0, 1.0, 8.0], dtype=torch.float64)
    w = c(v)
    want = [0.0, 2.0, -2.0, 2 * math.log(1 + 5) / math.log(11), 2 * math.log(41) / math.log(11)]
    assert w.tolist() == pytest.approx(want)
    # expands below the knee, compresses above it; odd and monotone
    assert abs(w[3]) > 1.0 and w[4] < 8.0
    x = torch.linspace(-10, 10, 201, dtype=torch.float64)
    assert torch.all(torch.diff(c(x)) > 0) and torch.allclose(c(-x), -c(x))
    # slope at 0 is mu / ln(1 + mu)
    eps = torch.tensor([1e-7], dtype=torch.float64)
    assert float(c(eps) / eps) == pytest.approx(10 / math.log(11), rel=1e-5)


def test_right_inverse_round_trips_and_attach_keeps_the_function():
    c = Compander(mu=5.0, knee=2.0)
    w = torch.randn(50, generator=_g(), dtype=torch.float64)
    v = c.right_inverse(w)
    assert float(c.bound) == pytest.approx(2 * float(w.std()))
    assert torch.allclose(c(v), w, atol=1e-12)
    model = build(MLP, [4, 8, 3], seed=0, init="glorot_normal")
    x = torch.randn(5, 4, generator=_g(1))
    before = model(x)
    comps = attach_compander(model)
    assert sorted(comps) == ["layers.0.weight", "layers.1.weight"]
    assert isinstance(transforms_of(model, "layers.0.weight")[0], Compander)
    assert torch.allclose(model(x), before, atol=1e-5)
    stored = model.layers[0].parametrizations.weight.original
    w_eff = model.layers[0].weight.detach()
    inside = w_eff.abs() < comps["layers.0.weight"].bound  # below the knee: |v| < |w|
    assert inside.any() and torch.all(stored.abs()[inside] < w_eff.abs()[inside])
    assert near_zero_share(stored, 0.05) >= near_zero_share(w_eff, 0.05)
    assert near_zero_share(torch.tensor([0.0, 0.5, -0.01, 2.0]), 0.1) == 0.5


def test_gradients_flow_to_v_and_merge_bakes_f():
    model = build(MLP, [4, 8, 3], seed=0, init="glorot_normal")
    attach_compander(model, learnable=True)
    x = torch.randn(6, 4, generator=_g(2))
    model(x).square().sum().backward()
    orig = model.layers[0].parametrizations.weight.original
    c = model.layers[0].parametrizations.weight[0]
    assert orig.grad is not None and c.log_mu.grad is not None
    # dL/dv = f'(v) dL/dw: the chain rule through f
    w_eff = model.layers[0].weight.detach()
    out = model(x)
    merged = merge(model)
    assert isinstance(merged.layers[0].weight, nn.Parameter)
    assert torch.allclose(merged.layers[0].weight, w_eff)
    assert torch.allclose(merged(x), out, atol=1e-6)


def test_bad_input():
    with pytest.raises(ConfigError, match="mu"):
        Compander(mu=0)
    with pytest.raises(ConfigError, match="knee"):
        Compander(knee=-1)
    lin = nn.Linear(3, 3)
    with torch.no_grad():
        lin.weight.zero_()
    with pytest.raises(ConfigError, match="nonzero std"):
        attach_compander(nn.Sequential(lin))
