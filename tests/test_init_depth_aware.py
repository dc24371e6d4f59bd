import math

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.init.registry import get_initializer, initialize
from weightlab.models.mlp import MLP


def test_multipliers_rise_and_multiply_to_growth():
    from weightlab.init.depth_aware import depth_aware_multipliers

    for depth in (1, 5, 20):
        k = depth_aware_multipliers(depth, growth=4.0, power=1.0)
        assert math.prod(k) == pytest.approx(4.0)
        assert all(b > a for a, b in zip(k[:-1], k[1:], strict=False))
    # hand-computed: depth 2, power 1 -> shares 1/3, 2/3 of log(growth)
    assert depth_aware_multipliers(2, 8.0, 1.0) == pytest.approx([2.0, 4.0])
    # power 0: even growth; growth 1: He exactly
    assert depth_aware_multipliers(4, 16.0, 0.0) == pytest.approx([2.0] * 4)
    assert depth_aware_multipliers(3, 1.0, 2.0) == pytest.approx([1.0] * 3)


def test_registered_and_variances_on_an_mlp():
    model = MLP([200] + [400] * 4 + [300])
    ctxs = initialize(model, "depth_aware", seed=0, growth=9.0, power=1.0)
    assert [c.depth for c in ctxs] == [5] * 5
    from weightlab.init.depth_aware import depth_aware_multipliers

    k = depth_aware_multipliers(5, 9.0, 1.0)
    for layer, kappa in zip(model.layers, k, strict=True):
        expect = 2.0 * kappa / layer.in_features
        assert layer.weight.var().item() == pytest.approx(expect, rel=0.03)
        assert torch.all(layer.bias == 0)


def test_growth_one_is_he_and_activation_variance_grows():
    depth, width = 12, 512
    model = MLP([width] * (depth + 1))
    x = torch.randn(512, width, generator=torch.Generator().manual_seed(1))

    def profile():
        h, out = x, []
        for i, layer in enumerate(model.layers):
            h = layer(h)
            out.append(h.var().item())
            h = torch.relu(h) if i < depth - 1 else h
        return out

    initialize(model, "depth_aware", seed=3, growth=1.0)
    he_ref = [layer.weight.detach().clone() for layer in model.layers]
    flat = profile()
    initialize(model, "he", seed=3)
    assert all(torch.equal(a, b.weight) for a, b in zip(he_ref, model.layers, strict=True))
    initialize(model, "depth_aware", seed=3, growth=16.0)
    grow = profile()
    # same draws, each layer scaled by sqrt(κ_ℓ); ReLU is positively homogeneous, so the
    # pre-activation variance of layer ℓ is He's times Π_{j<=ℓ} κ_j, ending at x16
    from weightlab.init.depth_aware import depth_aware_multipliers

    k = depth_aware_multipliers(depth, 16.0, 1.0)
    for i in range(depth):
        assert grow[i] / flat[i] == pytest.approx(math.prod(k[: i + 1]), rel=1e-4)
    assert grow[-1] / flat[-1] == pytest.approx(16.0, rel=1e-4)


def test_bad_params():
    with pytest.raises(ConfigError, match="growth"):
        get_initializer("depth_aware", growth=0)
    with pytest.raises(ConfigError, match="power"):
        get_initializer("depth_aware", power=-1)
    with pytest.raises(ConfigError, match="distribution"):
        get_initializer("depth_aware", dist="cauchy")
