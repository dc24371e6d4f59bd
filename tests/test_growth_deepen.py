"""Function-preserving deepening (Net2DeeperNet, Chen et al. 2016, Sec. 3.2): exact identity
insertion (float32, batch 64) on MLP, MLPBN and Sequential CNNs, the eval-only BatchNorm
variant, the optimizer, and the refusals (φ∘φ ≠ φ, output layer, unsupported containers)."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.growth.deepen import deepen
from weightlab.growth.widen import widen
from weightlab.models import MLP, build
from weightlab.models.ghost_bn import MLPBN
from weightlab.seeding import generator

TOL = 1e-6


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(64, *shape, generator=generator(seed))


def _cnn(act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        act(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )


def test_mlp_deepen_is_exact():
    model = build(MLP, [40, 32, 24, 10], seed=0)
    x = _x(40)
    y0 = model(x)
    name = deepen(model, "layers.0")
    assert name == "layers.1" and model.widths == [40, 32, 32, 24, 10]
    new = model.layers[1]
    assert torch.equal(new.weight, torch.eye(32)) and torch.equal(new.bias, torch.zeros(32))
    assert torch.equal(model(x), y0)  # identity Linear + ReLU copy: bit-exact
    deepen(model, "layers.2")
    assert torch.equal(model(x), y0) and len(model.layers) == 5
    widen(model, "layers.1", 40, seed=0)  # the grown net is still an MLP the graph walk reads
    assert (model(x) - y0).abs().max() <= TOL


def test_linear_mlp_passes():
    model = build(MLP, [10, 8, 3], seed=0, activation="linear")
    x = _x(10)
    y0 = model(x)
    deepen(model, "layers.0")
    assert (model(x) - y0).abs().max() <= TOL


@pytest.mark.parametrize("batchnorm", [False, True])
def test_mlpbn_deepen(batchnorm):
    model = build(MLPBN, [40, 32, 24, 10], seed=0).eval()
    x = _x(40)
    y0 = model(x)
    deepen(model, "layers.0", batchnorm=batchnorm)
    assert len(model.norms) == 3 and len(model.layers) == 4
    assert (model(x) - y0).abs().max() <= TOL
    if batchnorm:
        bn = model.norms[1]
        assert torch.allclose(bn.weight, torch.full((32,), (1 + bn.eps) ** 0.5))
        assert torch.equal(bn.running_mean, torch.zeros(32))
    else:
        assert isinstance(model.norms[1], nn.Identity)
        assert (model.train()(x) - copy.deepcopy(model).train()(x)).abs().max() == 0


def test_ghost_mlpbn_inserts_ghost_norm():
    model = build(MLPBN, [40, 16, 10], seed=0, virtual_batch=8).eval()
    x = _x(40)
    y0 = model(x)
    deepen(model, "layers.0", batchnorm=True)
    assert type(model.norms[1]).__name__ == "GhostBatchNorm1d" and model.norms[1].virtual_batch == 8
    assert (model(x) - y0).abs().max() <= TOL


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cnn_deepen_after_conv_and_linear(mode):
    model = _cnn()
    getattr(model, mode)()
    x = _x(1, 8, 8)
    ref = copy.deepcopy(model)
    name = deepen(model, "0")
    assert name == "3" and isinstance(model[4], nn.ReLU) and isinstance(model[5], nn.MaxPool2d)
    conv = model[3]
    assert conv.padding == (1, 1) and conv.weight[2, 2, 1, 1] == 1 and conv.weight.sum() == 8
    assert torch.equal(model(x), ref(x))
    deepen(model, "7")  # after the last Linear: no activation follows, identity only
    assert (model(x) - ref(x)).abs().max() <= TOL


def test_cnn_batchnorm_identity_is_exact_in_eval_only():
    model = _cnn().eval()
    x = _x(1, 8, 8)
    ref = copy.deepcopy(model)
    deepen(model, "0", batchnorm=True)
    assert isinstance(model[4], nn.BatchNorm2d)
    assert (model(x) - ref(x)).abs().max() <= TOL
    # train mode normalizes with batch statistics: not the identity (documented)
    assert (model.train()(x) - ref.train()(x)).abs().max() > 1e-3


@pytest.mark.parametrize("act", [nn.ReLU6, nn.Hardtanh, nn.Identity])
def test_conv1d_idempotent_activations_and_kernel_size(act):
    model = nn.Sequential(nn.Conv1d(2, 6, 5, padding=2), act(), nn.Conv1d(6, 3, 3))
    x = 3 * _x(2, 16)
    y0 = model(x)
    deepen(model, "0")
    assert model[2].kernel_size == (5,) and model[2].padding == (2,)
    assert (model(x) - y0).abs().max() <= TOL
    deepen(model, "0", kernel_size=1)
    assert (model(x) - y0).abs().max() <= TOL


def test_named_and_nested_sequentials():
    inner = nn.Sequential(OrderedDict(fc=nn.Linear(10, 8), act=nn.ReLU()))
    model = nn.Sequential(inner, nn.Linear(8, 3))
    x = _x(10)
    y0 = model(x)
    name = deepen(model, "0.fc")
    assert name == "0.fc_identity" and list(inner._modules) == [
        "fc",
        "act",
        "fc_identity",
        "fc_identity_1",
    ]
    assert torch.equal(model(x), y0)


def test_gelu_is_refused_and_really_is_not_exact():
    model = _cnn(nn.GELU)
    with pytest.raises(ConfigError, match="GELU has φ∘φ ≠ φ") as info:
        deepen(model, "0")
    assert "\n" not in str(info.value) and len(model) == 6  # nothing inserted
    # what the refusal prevents: identity conv + GELU copy changes the outputs
    model.eval()
    x = _x(1, 8, 8)
    y0 = model(x)
    model.insert(3, nn.Conv2d(8, 8, 3, padding=1))
    with torch.no_grad():
        nn.init.dirac_(model[3].weight)
        model[3].bias.zero_()
    model.insert(4, nn.GELU())
    assert (model(x) - y0).abs().max() > 1e-2


def test_bad_input():
    mlp = build(MLP, [40, 16, 10], seed=0)
    cases = [
        (lambda: deepen(build(MLP, [4, 8, 2], seed=0, activation="tanh"), "layers.0"), "tanh"),
        (lambda: deepen(build(MLP, [4, 8, 2], seed=0, activation="gelu"), "layers.0"), "gelu"),
        (lambda: deepen(nn.Sequential(nn.Linear(3, 3), nn.Tanh()), "0"), "Tanh"),
        (lambda: deepen(mlp, "layers.1"), "output layer"),
        (lambda: deepen(mlp, "layers.0", batchnorm=True), "MLP has no norms"),
        (lambda: deepen(mlp, "nope"), "no layer 'nope'"),
        (lambda: deepen(nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU()), "0"), "odd kernel"),
        (lambda: deepen(nn.Sequential(nn.BatchNorm1d(3)), "0"), "BatchNorm1d"),
    ]
    for call, text in cases:
        with pytest.raises(ConfigError, match=text) as info:
            call()
        assert "\n" not in str(info.value)
    assert len(mlp.layers) == 2 and mlp.widths == [40, 16, 10]

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            return torch.relu(self.a(x))

    with pytest.raises(ConfigError, match="inside an nn.Sequential"):
        deepen(Custom(), "a")


def test_optimizer_gets_the_inserted_params_with_empty_state():
    model = build(MLP, [10, 8, 3], seed=0)
    head = nn.Linear(1, 1)
    opt = torch.optim.SGD(
        [{"params": model.parameters(), "lr": 0.1}, {"params": head.parameters(), "lr": 0.5}],
        momentum=0.9,
    )
    x = _x(10)
    model(x).square().mean().backward()
    opt.step()
    before = {id(p) for p in opt.param_groups[0]["params"]}
    deepen(model, "layers.0", optimizer=opt)
    new = model.layers[1]
    group = opt.param_groups[0]["params"]
    assert any(p is new.weight for p in group) and any(p is new.bias for p in group)
    assert before <= {id(p) for p in group} and len(opt.param_groups[1]["params"]) == 2
    assert new.weight not in opt.state
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()
    assert not torch.equal(new.weight, torch.eye(8))  # the inserted layer trains
