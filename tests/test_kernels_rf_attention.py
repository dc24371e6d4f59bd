"""Random-feature attention: the formula on a hand case, permutation invariance in the keys,
the samplers' means, the closed-form ridge readout, and bad input."""

from __future__ import annotations

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.kernels.rf_attention import RandomFeatureAttention, ridge_fit, sample_qk

pytestmark = pytest.mark.usefixtures("one_thread")


def _x(n=6, keys=4, d=3, seed=0):
    return torch.randn(n, keys + 1, d, generator=torch.Generator().manual_seed(seed))


def test_hand_case_one_head_one_key():
    w = torch.tensor([[[2.0, 0.0], [0.0, -1.0]]], dtype=torch.float64)  # d = 1: (1, 2, 2)
    layer = RandomFeatureAttention(1, 1, qk_sampler=lambda m, d1, g: w)
    x = torch.tensor([[[1.5], [0.5]], [[1.0], [-2.0]]])  # (n=2, N+1=2, d=1)
    # x̃0ᵀ W x̃1 = 2·x0·x1 − 1: 0.5 -> relu 0.5 ; -5 -> relu 0
    phi = layer.features(x)
    assert torch.allclose(phi, torch.tensor([[0.25, 0.5], [0.0, 0.0]], dtype=torch.float64))


def test_keys_permutation_invariance_and_shape():
    layer = RandomFeatureAttention(3, 7, "nonzero_mean", seed=2)
    x = _x()
    perm = x[:, [0, 3, 1, 4, 2]]
    assert layer.features(x).shape == (6, 7 * 4) and layer.num_features == 28
    assert torch.allclose(layer.features(x), layer.features(perm))
    # swapping the query with a key changes the output
    assert not torch.allclose(layer.features(x), layer.features(x[:, [1, 0, 2, 3, 4]]))


def test_sampler_means():
    g = torch.Generator().manual_seed(0)
    zero = sample_qk(4000, 3, "gaussian", g=g)
    shifted = sample_qk(4000, 3, "nonzero_mean", qk_mean=0.8, g=g)
    target = torch.zeros(4, 4, dtype=torch.float64)
    target[:3, :3] = 0.8 * torch.eye(3, dtype=torch.float64)
    assert torch.allclose(zero.mean(0), torch.zeros(4, 4, dtype=torch.float64), atol=0.03)
    assert torch.allclose(shifted.mean(0), target, atol=0.03)
    assert float(zero.std()) == pytest.approx(0.5, rel=0.03)  # 1/sqrt(d+1)


def test_ridge_recovers_a_target_in_the_span():
    layer = RandomFeatureAttention(3, 5, seed=1)
    x = _x(n=80, seed=3)
    v_true = torch.randn(layer.num_features, generator=torch.Generator().manual_seed(4))
    y = layer.features(x) @ v_true.double()
    layer.fit_ridge(x, y, ridge=0.0)
    assert torch.allclose(layer(x), y, atol=1e-8)
    xt = _x(n=20, seed=9)
    assert torch.allclose(layer(xt), layer.features(xt) @ v_true.double(), atol=1e-6)


def test_ridge_primal_equals_dual():
    g = torch.Generator().manual_seed(0)
    f, y = torch.randn(30, 10, generator=g), torch.randn(30, generator=g)
    primal = ridge_fit(f, y, 0.1)  # p < n
    dual = f.double().T @ torch.linalg.solve(
        f.double() @ f.double().T + 0.1 * float(f.square().sum()) / 30 * torch.eye(30), y.double()
    )
    assert torch.allclose(primal, dual, atol=1e-9)


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((3, 0), {}, "heads must be > 0"),
        ((3, -2), {}, "heads must be > 0"),
        ((0, 4), {}, "d must be > 0"),
        ((3, 4), {"qk_sampler": "uniform"}, "unknown qk_sampler"),
        ((3, 4), {"activation": "gelu"}, "unknown attention activation"),
    ],
)
def test_bad_input_is_one_line(args, kwargs, match):
    with pytest.raises(ConfigError, match=match) as e:
        RandomFeatureAttention(*args, **kwargs)
    assert "\n" not in str(e.value)


def test_bad_shapes():
    with pytest.raises(ConfigError, match="query at position 0"):
        RandomFeatureAttention(3, 4).features(torch.randn(5, 4, 2))
    with pytest.raises(ConfigError, match="ridge must be"):
        ridge_fit(torch.randn(4, 2), torch.randn(4), -1.0)
