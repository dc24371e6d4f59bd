"""SGLD (Welling & Teh 2011, Eq. 4, full batch): the loop's optimizer, the population's, and
the 1-D Gaussian posterior it samples."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from weightlab.data.task import Split, TaskData
from weightlab.dynamics.sgld import SGLD, sgld_noise, split_noise
from weightlab.errors import ConfigError
from weightlab.models import MLP
from weightlab.population import MemberSpec, Population
from weightlab.seeding import derive_seed, generator
from weightlab.train import OptimConfig, ParamGroup, TrainConfig, train


class Mean(nn.Module):
    """``K`` independent scalar parameters, output ``θ`` for every input row."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * self.theta


def _regression(x: torch.Tensor, y: torch.Tensor) -> TaskData:
    s = Split(x, y)
    return TaskData("t", s, s, s, 0, kind="regression")


def test_gaussian_posterior_moments():
    """y_i ~ N(θ, 1), prior N(0, 1): the posterior is N(Σy/(n+1), 1/(n+1)). K = 2,000
    independent chains (one per coordinate), 800 steps at η·a = 0.03 (start forgotten to
    e^-12): the final states' mean within 4 SE, the variance within 12% (its discrete-time
    bias is 1/(1 - ηa/4) - 1 = 0.75%, its sampling SE 3.2%)."""
    n, k = 10, 2000
    ys = 1.5 + torch.randn(n, generator=generator(3), dtype=torch.float64)
    data = _regression(torch.ones(n, 1, dtype=torch.float64), ys[:, None].expand(n, k).clone())
    a = n + 1.0  # posterior precision: likelihood n, prior 1
    eta = 0.03 / a

    def summed_nll(pred, y):  # per-example loss × n: the batch mean is the summed NLL
        return n * 0.5 * (pred - y).square().sum(-1)

    cfg = TrainConfig(800, n, 800, OptimConfig("sgld", eta, weight_decay=1.0), summed_nll)
    model = Mean(k).double()
    train(model, data, cfg, 0, seed=7)
    theta = model.theta.detach()
    assert abs(float(theta.mean()) - float(ys.sum()) / a) < 4 * math.sqrt(1 / a / k)
    assert float(theta.var()) == pytest.approx(1 / a, rel=0.12)


def _mlp_task() -> TaskData:
    g = generator(11)
    x = torch.randn(24, 3, generator=g, dtype=torch.float64)
    y = torch.randn(24, 2, generator=g, dtype=torch.float64)
    return _regression(x, y)


def _factory(seed: int) -> nn.Module:
    model = MLP([3, 5, 2], activation="tanh")
    g = generator(derive_seed("test-sgld", seed))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def _cfg(groups=()) -> TrainConfig:
    optim = OptimConfig("sgld", 1e-2, weight_decay=0.5, groups=groups)
    return TrainConfig(40, 24, 20, optim, "mse")


@pytest.mark.parametrize("groups", [(), (ParamGroup(("layers.1.*",), 0.25, 4.0),)])
def test_population_equals_loop(groups):
    data, cfg, seeds = _mlp_task(), _cfg(groups), [0, 5, 9]
    pop = Population(_factory, [MemberSpec(s) for s in seeds], dtype=torch.float64)
    pop.fit(data, cfg)
    for i, s in enumerate(seeds):
        model = _factory(s)
        train(model, data, cfg, 0, seed=s, dtype=torch.float64)
        got = pop.state(i)
        for name, p in model.named_parameters():
            torch.testing.assert_close(got[name], p.detach(), rtol=0, atol=1e-12)


def test_population_masks_noise():
    """A pruned weight stays exactly zero under SGLD in a population (noise is masked)."""
    data, cfg = _mlp_task(), _cfg()
    mask = torch.ones(5, 3)
    mask[0] = 0
    pop = Population(_factory, [MemberSpec(1, masks={"layers.0.weight": mask})])
    pop.fit(data, cfg)
    w = pop.state(0)["layers.0.weight"]
    assert torch.all(w[0] == 0) and torch.all(w[1:] != 0)


def test_loop_deterministic_and_seeded():
    data, cfg = _mlp_task(), _cfg()
    runs = []
    for s in (2, 2, 3):
        model = _factory(2)  # same start: only the noise seed differs
        train(model, data, cfg, 0, seed=s, dtype=torch.float64)
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


def test_one_step_by_hand():
    """θ_1 = θ_0 - (η/2)(∇L + λθ_0) + √η ξ_1 with ξ_1 from derive_seed("sgld", seed, 1)."""
    p = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    q = nn.Parameter(torch.tensor([[0.5]], dtype=torch.float64))
    opt = SGLD([p, q], lr=0.04, weight_decay=2.0, seed=13)
    p.grad = torch.tensor([0.3, 0.1], dtype=torch.float64)
    q.grad = torch.tensor([[-1.0]], dtype=torch.float64)
    opt.step()
    xi = sgld_noise(13, 1, 3).double()
    xi_p, xi_q = split_noise(xi, [torch.Size([2]), torch.Size([1, 1])])
    f64 = torch.float64
    p0, g0 = torch.tensor([1.0, -2.0], dtype=f64), torch.tensor([0.3, 0.1], dtype=f64)
    want_p = p0 - 0.02 * (g0 + 2 * p0) + 0.2 * xi_p
    want_q = 0.5 - 0.02 * (-1.0 + 2 * 0.5) + 0.2 * xi_q
    torch.testing.assert_close(p.detach(), want_p, rtol=0, atol=1e-15)
    torch.testing.assert_close(q.detach(), want_q, rtol=0, atol=1e-15)


@pytest.mark.parametrize("eta", [0.0, -1e-3, float("nan")])
def test_bad_step_size(eta):
    with pytest.raises(ConfigError, match="SGLD step size"):
        OptimConfig("sgld", eta)


def test_no_momentum():
    with pytest.raises(ConfigError, match="momentum"):
        OptimConfig("sgld", 1e-3, momentum=0.9)
