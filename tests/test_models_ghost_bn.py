"""Ghost Batch Normalization (Hoffer et al. 2017, Sec. 4.1): equals nn.BatchNorm1d applied to
each ghost batch in turn (outputs, gradients and running statistics), reduces to plain BN when
the ghost batch covers the batch, and trains identically in the loop and in a population
(vmap path)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from weightlab.data.task import TaskData, make_split
from weightlab.errors import ConfigError
from weightlab.models.factory import model_factory
from weightlab.models.ghost_bn import MLPBN, GhostBatchNorm1d
from weightlab.population import MemberSpec, Population
from weightlab.train import train
from weightlab.train.config import OptimConfig, TrainConfig


def _pair(vb: int, c: int = 5):
    g = torch.Generator().manual_seed(0)
    ghost = GhostBatchNorm1d(c, vb).double()
    ref = nn.BatchNorm1d(c).double()
    with torch.no_grad():
        for m in (ghost, ref):
            m.weight.copy_(torch.rand(c, generator=torch.Generator().manual_seed(1)) + 0.5)
            m.bias.copy_(torch.randn(c, generator=torch.Generator().manual_seed(2)))
    x = torch.randn(24, c, generator=g, dtype=torch.float64) * 3 + 1
    return ghost, ref, x


@pytest.mark.parametrize("vb", [4, 6, 5])  # 5: 24 = 4·5 + 4, one smaller last ghost batch
def test_equals_batchnorm_per_ghost_batch(vb):
    ghost, ref, x = _pair(vb)
    xg, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = ghost(xg)
    ref_out = torch.cat([ref(chunk) for chunk in xr.split(vb)])  # sequential running updates
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(ghost.running_mean, ref.running_mean)
    torch.testing.assert_close(ghost.running_var, ref.running_var)
    assert int(ghost.num_batches_tracked) == int(ref.num_batches_tracked) == len(x.split(vb))
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (ref_out * w).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)
    torch.testing.assert_close(ghost.weight.grad, ref.weight.grad)
    ghost.eval(), ref.eval()
    torch.testing.assert_close(ghost(x), ref(x))


def test_whole_batch_is_plain_batchnorm_and_ghost_stats_differ():
    ghost, ref, x = _pair(None)
    torch.testing.assert_close(ghost(x), ref(x))
    small = GhostBatchNorm1d(5, 4).double()
    # each ghost batch of 4 is normalized on its own: mean 0, biased var ~1 within it
    out = small(x).view(6, 4, 5)
    torch.testing.assert_close(out.mean(1), torch.zeros(6, 5, dtype=torch.float64))
    assert not torch.allclose(small(x), nn.BatchNorm1d(5).double()(x))


def test_bad_virtual_batch():
    with pytest.raises(ConfigError, match="ghost batch"):
        GhostBatchNorm1d(3, 1)
    with pytest.raises(ConfigError, match="multiple of 4"):
        GhostBatchNorm1d(3, 4)(torch.randn(9, 3))


def _task() -> TaskData:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(96, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return TaskData(
        "toy",
        make_split(x[:64], y[:64]),
        make_split(x[64:80], y[64:80]),
        make_split(x[80:], y[80:]),
        2,
    )


def test_loop_and_population_vmap_agree():
    data = _task()
    factory = model_factory(MLPBN, [6, 8, 8, 2], virtual_batch=8)
    cfg = TrainConfig(2, 32, 0, OptimConfig("sgd", lr=0.1, momentum=0.9))
    specs = [MemberSpec(seed=s) for s in (0, 1)]
    pop = Population(factory, specs, dtype=torch.float64)
    results = pop.fit(data, cfg)
    assert pop._seq_reason is None  # the vmap path, not the sequential fallback
    for i, s in enumerate((0, 1)):
        model = factory(s).double()
        res = train(model, data, cfg, 0, seed=s, dtype=torch.float64)
        state = pop.state(i)
        for k, v in model.state_dict().items():
            torch.testing.assert_close(state[k].to(v.dtype), v, rtol=1e-9, atol=1e-9)
        assert res.final.test_loss == pytest.approx(results[i].final.test_loss, rel=1e-9)
