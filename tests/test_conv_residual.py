"""The conv residual teacher-student of [#100]: the teacher on a hand-computed case, the
registered task, stacked students equal to solo ones (outputs and gradients), the two-phase
plan and its bad input, gradient descent through the one loop, the uniform ball."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.data.conv_teacher import conv_teacher, shortcut_filter
from weightlab.dynamics.conv_residual import (
    ConvResidualStudents,
    half_squared_sum,
    member_losses,
    phase_plan,
    train_students,
    uniform_ball,
)
from weightlab.errors import ConfigError, DataError
from weightlab.seeding import generator

pytestmark = pytest.mark.usefixtures("one_thread")


def test_teacher_hand_computed():
    z = torch.tensor([[[3.0, 4.0], [-1.0, 0.0]]])  # k = 2 patches, p = 2
    a = torch.tensor([2.0, 5.0])
    v = torch.tensor([0.0, 2.0])  # v/|v| = e2
    # 2 * ReLU(4) + 5 * ReLU(0) = 8
    torch.testing.assert_close(conv_teacher(z, a, v), torch.tensor([8.0]))
    torch.testing.assert_close(shortcut_filter(4), torch.full((4,), 0.5))


def test_registered_task():
    t = load_dataset("conv_teacher", k=3, p=4, n_train=20, n_test=5, seed=1)
    assert t.kind == "regression" and t.input_shape == (12,) and t.train.y.shape == (20, 1)
    info = t.info
    torch.testing.assert_close(info["v_star"], shortcut_filter(4) + info["w_star"])
    y = conv_teacher(t.train.x.view(20, 3, 4), info["a_star"], info["v_star"])
    torch.testing.assert_close(t.train.y[:, 0], y)
    again = load_dataset("conv_teacher", k=3, p=4, n_train=20, n_test=5, seed=1)
    assert torch.equal(again.train.x, t.train.x)
    with pytest.raises(DataError):
        load_dataset("conv_teacher", k=0)


def _students(m=4, k=3, p=5, seed=0):
    g = generator(seed)
    a0 = torch.randn(m, k, generator=g)
    w0 = torch.randn(m, p, generator=g)
    shortcut = torch.zeros(m, p)
    shortcut[: m // 2] = shortcut_filter(p)
    return ConvResidualStudents(a0, w0, shortcut), a0, w0, shortcut


def test_students_equal_solo_outputs_and_gradients():
    model, a0, w0, shortcut = _students()
    z = torch.randn(9, 3, 5, generator=generator(1))
    y = torch.randn(9, 4, generator=generator(2))
    f = model(z)
    half_squared_sum(f, y).mean().backward()
    for i in range(4):
        a = a0[i].clone().requires_grad_(True)
        w = w0[i].clone().requires_grad_(True)
        fi = conv_teacher(z, a, shortcut[i] + w)
        torch.testing.assert_close(f[:, i].detach(), fi.detach(), rtol=1e-5, atol=1e-6)
        (0.5 * (fi - y[:, i]).square().mean()).backward()
        torch.testing.assert_close(model.a.grad[i], a.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.w.grad[i], w.grad, rtol=1e-5, atol=1e-6)
    assert member_losses(model, z, y).shape == (4,)


def test_phase_plan_and_bad_phases():
    assert phase_plan(10, [(3, 0.01), (7, 1.0)]) == [(3, 0.01), (7, 1.0)]
    for phases, match in (
        ([(3, 0.01), (6, 1.0)], "cover 9 steps but training has 10"),
        ([(0, 0.01), (10, 1.0)], "at least one step"),
        ([(5, -1.0), (5, 1.0)], ">= 0"),
        ([], "at least one phase"),
    ):
        with pytest.raises(ConfigError, match=match) as e:
            phase_plan(10, phases)
        assert "\n" not in str(e.value)


def test_gradient_descent_phases():
    z = torch.randn(64, 3, 5, generator=generator(3))
    y = torch.randn(64, 4, generator=generator(4))
    # one step equals the hand-written update
    model, a0, w0, _ = _students()
    probe, _, _, _ = _students()
    half_squared_sum(probe(z), y).mean().backward()
    train_students(model, z, y, 0.1, [(1, 1.0)])
    torch.testing.assert_close(model.a.detach(), a0 - 0.1 * probe.a.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.w.detach(), w0 - 0.1 * probe.w.grad, rtol=1e-5, atol=1e-6)
    # a frozen first phase leaves w, not a, unchanged
    model, a0, w0, _ = _students()
    train_students(model, z, y, 0.1, [(4, 0.0)])
    assert torch.equal(model.w.detach(), w0) and not torch.equal(model.a.detach(), a0)
    # consecutive phases are one run
    one, _, _, _ = _students()
    two, _, _, _ = _students()
    train_students(one, z, y, 0.1, [(6, 1.0)])
    train_students(two, z, y, 0.1, [(2, 1.0), (4, 1.0)])
    torch.testing.assert_close(one.w.detach(), two.w.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(one.a.detach(), two.a.detach(), rtol=1e-5, atol=1e-6)


def test_uniform_ball():
    r = torch.tensor([2.0])
    x = uniform_ball(20000, 4, r, generator(5))
    norms = x.norm(dim=1)
    assert float(norms.max()) <= 2.0 + 1e-6
    frac = (norms / 2.0) ** 4  # uniform on [0, 1] for a uniform point in the 4-ball
    assert abs(float(frac.mean()) - 0.5) < 0.01
    assert abs(float(x.mean())) < 0.02
    assert math.isclose(float((x[:, 0] > 0).float().mean()), 0.5, abs_tol=0.02)
