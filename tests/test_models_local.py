"""LocallyConnected1d (a convolution without weight sharing, Lahoti et al. 2024 [#32]):
equal to nn.Conv1d when tied, a hand-computed case, groups, vmap/functional_call; PatchNet
and PatchNetStack (members equal their solo nets, gradients of the summed loss)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from weightlab.errors import ConfigError
from weightlab.models import build
from weightlab.models.local import LocallyConnected1d, PatchNet, PatchNetStack, tie_conv

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("c_in", "c_out", "kernel", "stride", "length", "groups"),
    [(1, 8, 4, 4, 16, 1), (3, 5, 3, 1, 11, 1), (2, 4, 5, 2, 13, 1), (4, 6, 3, 2, 12, 2)],
)
def test_tied_equals_conv1d(c_in, c_out, kernel, stride, length, groups):
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, groups=groups).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=torch.float64))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=g, dtype=torch.float64))
    lc = LocallyConnected1d(c_in, c_out, kernel, stride, length=length, groups=groups).double()
    tie_conv(lc, conv)
    x = torch.randn(7, c_in, length, generator=g, dtype=torch.float64)
    assert lc.positions == conv(x).shape[-1]
    torch.testing.assert_close(lc(x), conv(x), rtol=1e-12, atol=1e-12)


def test_hand_computed_untied():
    lc = LocallyConnected1d(1, 1, 2, 2, length=4)
    with torch.no_grad():
        lc.weight.copy_(torch.tensor([[[[1.0, 2.0]]], [[[3.0, -1.0]]]]))  # (P=2, 1, 1, 2)
        lc.bias.copy_(torch.tensor([[0.5], [-1.0]]))
    x = torch.tensor([[[1.0, 1.0, 2.0, 4.0]]])
    # position 0: 1*1 + 2*1 + 0.5 = 3.5; position 1: 3*2 - 1*4 - 1 = 1
    torch.testing.assert_close(lc(x), torch.tensor([[[3.5, 1.0]]]))


def test_untied_positions_are_independent():
    lc = LocallyConnected1d(1, 2, 3, 3, length=9)
    x = torch.randn(4, 1, 9)
    lc(x).sum().backward()
    # only position p's filter sees window p: its gradient is that window's sum over the batch
    windows = x.unfold(-1, 3, 3)  # (4, 1, 3, 3)
    expected = windows.sum(0).permute(1, 0, 2).unsqueeze(1).expand(3, 2, 1, 3)
    torch.testing.assert_close(lc.weight.grad, expected)


def test_vmap_functional_call_equals_members():
    members = [LocallyConnected1d(2, 3, 3, 2, length=11) for _ in range(4)]
    params, _ = stack_module_state(members)
    base = LocallyConnected1d(2, 3, 3, 2, length=11).to("meta")
    x = torch.randn(4, 5, 2, 11)

    def one(p, xi):
        return functional_call(base, p, (xi,))

    out = vmap(one)(params, x)
    for i, m in enumerate(members):
        torch.testing.assert_close(out[i], m(x[i]))
    # gradients through vmap equal each member's own
    grads = torch.autograd.grad(out.square().sum(), params["weight"])[0]
    for i, m in enumerate(members):
        (g,) = torch.autograd.grad(m(x[i]).square().sum(), m.weight)
        torch.testing.assert_close(grads[i], g)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 0},
        {"kernel_size": 20},
        {"stride": 0},
        {"groups": 3},
    ],
)
def test_bad_arguments(kwargs):
    args = {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "stride": 1, "length": 10}
    args.update(kwargs)
    with pytest.raises(ConfigError) as e:
        LocallyConnected1d(**args)
    assert "\n" not in str(e.value)


def test_patchnet_forms():
    k, d = 3, 4
    x = torch.randn(6, k * d)
    cnn = build(PatchNet, "cnn", k, d, 5, seed=1)
    patches = x.view(6, k, d)
    h = torch.relu(patches @ cnn.hidden.weight[:, 0, :].T + cnn.hidden.bias).sum(1)
    f = h @ cnn.readout.weight[0] + cnn.readout.bias
    out = cnn(x)
    torch.testing.assert_close(out[:, 1], f)
    assert torch.equal(out[:, 0], torch.zeros(6))
    lcn = build(PatchNet, "lcn", k, d, 5, seed=1)
    w = lcn.hidden.weight[:, :, 0, :]  # (k, C, d)
    h = torch.relu(torch.einsum("bkd,kcd->bkc", patches, w) + lcn.hidden.bias).sum(1)
    torch.testing.assert_close(lcn(x)[:, 1], h @ lcn.readout.weight[0] + lcn.readout.bias)
    fcn = build(PatchNet, "fcn", k, d, 5, seed=1)
    assert fcn.hidden.weight.shape == (5 * k, k * d)
    # cross-entropy on (0, f) is the logistic loss of f
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    ce = nn.functional.cross_entropy(out, y, reduction="none")
    torch.testing.assert_close(ce, nn.functional.softplus(-(2 * y - 1) * out[:, 1]))


@pytest.mark.parametrize("kind", ["cnn", "lcn", "fcn"])
def test_stack_equals_members_and_their_gradients(kind):
    k, d, m = 3, 4, 3
    nets = [build(PatchNet, kind, k, d, 5, seed=s) for s in range(m)]
    stack = PatchNetStack.from_members(nets)
    x = torch.randn(7, m, k * d)
    y = torch.randint(0, 2, (7, m)).float()
    f = stack(x)
    for i, net in enumerate(nets):
        torch.testing.assert_close(f[:, i], net(x[:, i])[:, 1], rtol=1e-5, atol=1e-6)
    # gradient descent on the summed loss: each member's slice is its own loss's gradient
    nn.functional.softplus(-(2 * y - 1) * f).mean(0).sum().backward()
    grad_nets = []
    for i, net in enumerate(nets):
        nn.functional.softplus(-(2 * y[:, i] - 1) * net(x[:, i])[:, 1]).mean().backward()
        g = PatchNet(kind, k, d, 5)
        with torch.no_grad():
            for p, q in zip(g.parameters(), net.parameters(), strict=True):
                p.copy_(q.grad)
        grad_nets.append(g)
    want = PatchNetStack.from_members(grad_nets)
    for name, p in stack.named_parameters():
        torch.testing.assert_close(p.grad, getattr(want, name), rtol=1e-5, atol=1e-6)
    for i, net in enumerate(nets):  # member() round trip
        torch.testing.assert_close(stack.member(i)(x[:, i]), net(x[:, i]))


def test_population_generic_path_equals_the_loop():
    """PatchNet("lcn") (a LocallyConnected1d inside) trains in a population through the
    vmap path as each member trains alone in the loop."""
    from weightlab.data import load_dataset
    from weightlab.models import model_factory
    from weightlab.population import MemberSpec, Population
    from weightlab.train import train
    from weightlab.train.config import OptimConfig, TrainConfig

    data = load_dataset("dsd", k=2, d=3, n_train=32, n_test=16, seed=1)
    fac = model_factory(PatchNet, "lcn", 2, 3, 4)
    cfg = TrainConfig(5, 32, 0, OptimConfig("sgd", lr=0.5))
    pop = Population(fac, [MemberSpec(seed=s) for s in range(2)], dtype=torch.float64)
    results = pop.fit(data, cfg)
    for s, res in enumerate(results):
        solo = train(fac(s), data, cfg, data_seed=0, seed=s, dtype=torch.float64)
        assert res.final.train_loss == pytest.approx(solo.final.train_loss, rel=1e-6)
        assert res.final.test_loss == pytest.approx(solo.final.test_loss, rel=1e-6)
