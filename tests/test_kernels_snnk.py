"""SNNK layers: the exact Gaussian random-feature identities (Monte-Carlo with tolerance), the
m^-1/2 error slope, trainable parameter count, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.kernels.snnk import SNNKLinear, input_features, weight_features

pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(seed: int = 0, d: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(7, d, generator=g, dtype=torch.float64) * 0.4
    w = torch.randn(3, d, generator=g, dtype=torch.float64) * 0.4
    return x, w


@pytest.mark.parametrize("act,fn", [("sin", torch.sin), ("cos", torch.cos), ("exp", torch.exp)])
def test_identity_is_unbiased(act, fn):
    x, w = _pair()
    g = torch.Generator().manual_seed(1)
    omega = torch.randn(200_000, x.shape[1], generator=g, dtype=torch.float64)
    est = input_features(x, omega, act) @ weight_features(w, omega, act).T
    exact = fn(x @ w.T)
    # standard error of the mean at m = 2e5 draws is ~3e-3 for these norms
    assert torch.allclose(est, exact, atol=2e-2)


def test_hand_case_exp_single_draw():
    # one draw omega = 0: Φ(x)Ψ(w) = exp(-|x|²/2) exp(-|w|²/2) exactly
    x = torch.tensor([[0.3, -0.4]], dtype=torch.float64)
    w = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    omega = torch.zeros(1, 2, dtype=torch.float64)
    v = input_features(x, omega, "exp") @ weight_features(w, omega, "exp").T
    assert float(v) == pytest.approx(math.exp(-0.125 - 0.5))
    # sin at omega = 0 is 0, cos is exp(|x|²/2 - |w|²/2)
    assert float(input_features(x, omega, "sin").sum()) == 0.0
    c = input_features(x, omega, "cos") @ weight_features(w, omega, "cos").T
    assert float(c) == pytest.approx(math.exp(0.125 - 0.5))


def test_error_falls_as_m_to_the_minus_half():
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 4).double()
    x = torch.randn(50, 6, dtype=torch.float64)
    exact = SNNKLinear.exact(x, lin.weight, lin.bias, "sin")
    ms, errs = [16, 64, 256, 1024, 4096], []
    for m in ms:
        e = [
            float(
                (SNNKLinear.from_linear(lin, m, "sin", seed=s)(x) - exact).detach().square().mean()
            )
            for s in range(20)
        ]
        errs.append(math.sqrt(sum(e) / len(e)))
    lx = torch.tensor([math.log(m) for m in ms])
    ly = torch.tensor([math.log(e) for e in errs])
    slope = float(((lx - lx.mean()) * (ly - ly.mean())).sum() / (lx - lx.mean()).square().sum())
    assert -0.6 < slope < -0.4, slope


def test_layer_trains_only_v_and_is_deterministic():
    a = SNNKLinear(10, 3, 32, "sin", seed=4)
    b = SNNKLinear(10, 3, 32, "sin", seed=4)
    assert [n for n, _ in a.named_parameters()] == ["v"]
    assert sum(p.numel() for p in a.parameters()) == 32 * 3
    x = torch.randn(5, 10)
    assert torch.equal(a(x), b(x)) and a(x).shape == (5, 3)
    a(x).sum().backward()
    assert a.v.grad is not None and a.v.grad.abs().sum() > 0
    assert not torch.equal(a.omega, SNNKLinear(10, 3, 32, "sin", seed=5).omega)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"activation": "relu"}, "no exact random-feature construction"),
        ({"activation": "tanh"}, "use one of: sin, cos, exp"),
        ({"num_features": 0}, "num_features must be > 0"),
        ({"out_features": -1}, "out_features must be > 0"),
        ({"input_scale": 0.0}, "input_scale must be > 0"),
    ],
)
def test_bad_input_is_one_line(kwargs, match):
    args = {"in_features": 4, "out_features": 2, "num_features": 8, **kwargs}
    with pytest.raises(ConfigError, match=match) as e:
        SNNKLinear(**args)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="expects inputs with 4"):
        SNNKLinear(4, 2, 8)(torch.randn(3, 5))
