"""Empirical NTK Gram matrix and kernel–target alignment [#39]: known answers."""

import pytest
import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.init.kernel_alignment import initial_alignment, kernel_target_alignment, ntk_gram
from weightlab.init.output_scale import output_scale
from weightlab.models import build
from weightlab.models.mlp import MLP


def _x(n=12, d=5, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_linear_model_ntk_is_x_xt_plus_bias():
    x = _x()
    lin = nn.Linear(5, 1, bias=False).double()
    torch.testing.assert_close(ntk_gram(lin, x), x @ x.T)
    lin_b = nn.Linear(5, 1).double()
    torch.testing.assert_close(ntk_gram(lin_b, x, chunk=5), x @ x.T + 1.0)  # bias: +1


def test_two_layer_ntk_matches_autograd_jacobian():
    x = _x(7, 4)
    m = build(MLP, [4, 6, 1], seed=3).double()
    rows = []
    for i in range(x.shape[0]):
        m.zero_grad()
        m(x[i : i + 1]).sum().backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in m.parameters()]))
    j = torch.stack(rows)
    torch.testing.assert_close(ntk_gram(m, x, chunk=3), j @ j.T)


def test_alignment_known_answers():
    y = torch.tensor([1.0, -2.0, 3.0])
    assert kernel_target_alignment(torch.outer(y, y) * 7.0, y) == pytest.approx(1.0)
    # identity kernel: y'y / (sqrt(n) |y|^2) = 1/sqrt(n)
    assert kernel_target_alignment(torch.eye(3), y) == pytest.approx(3**-0.5)
    # a kernel orthogonal to y: 0
    v = torch.tensor([2.0, 1.0, 0.0])  # v . y = 0
    assert kernel_target_alignment(torch.outer(v, v), y) == pytest.approx(0.0, abs=1e-12)
    # linear model, y = x w: A = w'(X'X)^2 w / (|X X'|_F w'X'X w)
    x = _x(20, 3, seed=1)
    w = torch.tensor([1.0, 0.5, -1.0], dtype=torch.float64)
    yy = x @ w
    g = x.T @ x
    want = float(w @ g @ g @ w) / (float(torch.linalg.matrix_norm(x @ x.T)) * float(w @ g @ w))
    lin = nn.Linear(3, 1, bias=False).double()
    assert initial_alignment(lin, x, yy) == pytest.approx(want, rel=1e-10)


def test_alignment_is_invariant_to_output_scale():
    x = _x(10, 4)
    y = x[:, 0] * x[:, 1]
    m = build(MLP, [4, 8, 1], seed=0).double()
    a1 = initial_alignment(m, x, y)
    # output_scale's frozen copy holds buffers only, so K is alpha^2 K_model
    f = output_scale(m, 3.0)
    torch.testing.assert_close(ntk_gram(f, x), 9.0 * ntk_gram(m, x))
    assert initial_alignment(f, x, y) == pytest.approx(a1, rel=1e-10)
    assert 0.0 < a1 < 1.0


def test_bad_input_is_one_line_config_error():
    with pytest.raises(ConfigError, match="scalar-output"):
        ntk_gram(nn.Linear(3, 2), torch.randn(4, 3))
    with pytest.raises(ConfigError, match=r"\(n, n\) kernel"):
        kernel_target_alignment(torch.eye(3), torch.ones(4))
    with pytest.raises(ConfigError, match="zero"):
        kernel_target_alignment(torch.eye(3), torch.zeros(3))
