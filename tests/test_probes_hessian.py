"""Hessian probes: HVP against autograd's full Hessian, power iteration and Hutchinson
against the closed form of least squares (H = 2XᵀX/n), and the training-loop probe."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.models import MLP
from weightlab.probes.hessian import hessian_trace, hvp, sharpness_probe, top_eigenvalue
from weightlab.train import OptimConfig, TrainConfig, train


def _least_squares(n=64, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3, d).double()
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    return model, x, y, 2 * x.T @ x / n


def test_power_iteration_and_hutchinson_match_least_squares_closed_form():
    model, x, y, h = _least_squares()
    e = top_eigenvalue(model, x, y, iters=500, tol=1e-10)
    assert e.converged and e.value == pytest.approx(float(torch.linalg.eigvalsh(h)[-1]), rel=1e-6)
    t = hessian_trace(model, x, y, samples=400, seed=1)
    assert abs(t.value - float(h.trace())) <= 4 * t.stderr
    assert t.stderr > 0


def test_hvp_equals_autograd_hessian_on_a_tanh_mlp_and_chunks_agree():
    torch.manual_seed(0)
    model = MLP([3, 5, 2], activation="tanh").double()
    x = torch.randn(10, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (10,))
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(flat):
        parts, i = {}, 0
        for k, s in zip(names, shapes, strict=True):
            parts[k] = flat[i : i + s.numel()].view(s)
            i += s.numel()
        out = functional_call(model, parts, (x,))
        return nn.functional.cross_entropy(out, y)

    full = torch.autograd.functional.hessian(loss, flat0)
    v = torch.randn(flat0.numel(), dtype=torch.float64)
    vs, i = [], 0
    for s in shapes:
        vs.append(v[i : i + s.numel()].view(s))
        i += s.numel()
    got = torch.cat([t.flatten() for t in hvp(model, x, y, vs)])
    torch.testing.assert_close(got, full @ v)
    chunked = torch.cat([t.flatten() for t in hvp(model, x, y, vs, chunk=3)])
    torch.testing.assert_close(chunked, got)


def test_probes_leave_the_model_untouched_and_are_deterministic():
    model, x, y, _ = _least_squares()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = top_eigenvalue(model, x, y, iters=5, seed=3)
    b = top_eigenvalue(model, x, y, iters=5, seed=3)
    hessian_trace(model, x, y, samples=3)
    assert a == b and model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_sharpness_probe_in_the_training_loop():
    data = load_dataset("iris", "cpu")
    cfg = TrainConfig(epochs=2, batch_size=30, optim=OptimConfig("sgd", lr=0.1))
    model = MLP([4, 8, 3])
    res = train(model, data, cfg, data_seed=0, probes=[sharpness_probe(2, n=60, iters=10)])
    rows = [r for r in res.probes if "sharpness/value" in r]
    assert rows and rows[0]["step"] == 0
    assert all(r["sharpness/value"] > 0 for r in rows)


def test_bad_inputs_are_one_line_errors():
    model, x, y, _ = _least_squares()
    with pytest.raises(ConfigError, match="matching"):
        top_eigenvalue(model, x, y[:3])
    with pytest.raises(ConfigError, match="samples"):
        hessian_trace(model, x, y, samples=1)
    frozen = nn.Linear(2, 1).requires_grad_(False)
    with pytest.raises(ConfigError, match="require gradients"):
        top_eigenvalue(frozen, torch.randn(4, 2), torch.randn(4, 1))
