"""LSUV (Mishkin & Matas 2016, Algorithm 1): unit output variance per layer, its forward-pass
and iteration counts, determinism, masks, and the missing-data error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from weightlab.core import apply_masks
from weightlab.errors import ConfigError
from weightlab.init.lsuv import LSUV
from weightlab.init.registry import get_initializer, initialize
from weightlab.models import build
from weightlab.models.convnets import SmallCNN
from weightlab.models.minilm import encoder_linears, tiny_bert
from weightlab.models.mlp import MLP
from weightlab.seeding import generator


def _x(*shape, seed=1):
    return torch.randn(*shape, generator=generator(seed)) * 3.0 + 0.5


def _output_vars(model: nn.Module, modules: dict[str, nn.Module], call) -> dict[str, float]:
    got: dict[str, float] = {}

    def hook(name):
        def record(_m, _i, out):
            got.setdefault(name, float(out.double().var()))

        return record

    hooks = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    with torch.no_grad():
        call()
    for h in hooks:
        h.remove()
    return got


def test_every_layer_of_a_tanh_mlp_ends_at_unit_output_variance():
    model = build(MLP, [20, 64, 64, 64, 10], seed=0, activation="tanh")
    x = _x(256, 20)
    init = get_initializer("lsuv")
    ctxs = initialize(model, init, seed=3, data=x)
    assert [r.name for r in init.report] == [c.name for c in ctxs]
    assert all(r.converged for r in init.report)
    got = _output_vars(model, {f"l{i}": model.layers[i] for i in range(4)}, lambda: model(x))
    assert all(abs(v - 1) < 0.1 for v in got.values()), got
    # the recorded last variance is the one measured after the previous rescales
    for r in init.report:
        assert abs(r.variances[-1] - 1) < 0.1
        assert r.scale > 0


def test_passes_iterations_and_early_exit_of_each_pass():
    model = build(MLP, [20, 64, 64, 10], seed=0, activation="tanh")
    x = _x(128, 20)
    calls = {"model": 0, "last": 0}
    model.register_forward_pre_hook(lambda *a: calls.__setitem__("model", calls["model"] + 1))
    model.layers[2].register_forward_pre_hook(
        lambda *a: calls.__setitem__("last", calls["last"] + 1)
    )
    init = LSUV(tol=0.01, max_iter=4)
    initialize(model, init, seed=0, data=x)
    iters = [r.iterations for r in init.report]
    assert init.forward_passes == sum(iters) == calls["model"]  # one forward per iteration
    assert all(1 <= i <= 4 for i in iters)
    assert calls["last"] == iters[-1]  # passes for earlier layers stop at their layer
    one = LSUV(max_iter=1)
    initialize(model, one, seed=0, data=x)
    assert [r.iterations for r in one.report] == [1, 1, 1] and one.forward_passes == 3


def test_a_linear_net_converges_in_two_passes_per_layer_exactly():
    # without nonlinearity and biases, Var(c·Wx) = c² Var(Wx): one rescale lands on 1
    model = nn.Sequential(nn.Linear(10, 30), nn.Linear(30, 30), nn.Linear(30, 5))
    init = LSUV(tol=1e-6)
    initialize(model, init, seed=0, data=_x(64, 10))
    assert [r.iterations for r in init.report] == [2, 2, 2]
    assert all(abs(r.variances[1] - 1) < 1e-6 for r in init.report)
    v0 = init.report[0].variances[0]
    assert init.report[0].scale == pytest.approx(v0**-0.5)


def test_deterministic_and_seed_dependent():
    x = _x(128, 20)

    def run(seed):
        m = build(MLP, [20, 32, 32, 10], seed=0, activation="relu")
        initialize(m, "lsuv", seed=seed, data=x)
        return [p.detach().clone() for p in m.parameters()]

    a, b, c = run(5), run(5), run(6)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_cnn_conv_layers_reach_unit_variance():
    model = SmallCNN(3, (8, 16), 10)
    x = _x(32, 3, 8, 8)
    init = LSUV()
    initialize(model, init, seed=0, data=x)
    assert len(init.report) == 3 and all(r.converged for r in init.report)
    model.eval()
    convs = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    got = _output_vars(model, convs, lambda: model(x))
    assert all(abs(v - 1) < 0.1 for v in got.values()), got


def test_minilm_shaped_encoder_with_dict_inputs():
    model = tiny_bert(0, layers=1)
    ids = torch.randint(5, 512, (4, 12), generator=generator(0))
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    init = LSUV()
    ctxs = initialize(model, init, seed=0, data=data, selector=encoder_linears())
    assert len(ctxs) == 6 and all(r.converged for r in init.report)
    assert all(r.iterations <= 10 for r in init.report)
    mods = {c.name: c.module for c in ctxs}
    got = _output_vars(model, mods, lambda: model(**data))
    assert all(abs(v - 1) < 0.1 for v in got.values()), got


def test_masked_weights_stay_zero():
    model = build(MLP, [20, 32, 10], seed=0)
    mask = (torch.rand(32, 20, generator=generator(2)) > 0.5).float()
    apply_masks(model, {"layers.0.weight": mask})
    initialize(model, "lsuv", seed=0, data=_x(64, 20))
    stored = model.layers[0].parametrizations.weight.original.detach()
    assert torch.all(stored[mask == 0] == 0) and torch.any(stored[mask == 1] != 0)


def test_needs_data_and_bad_parameters_are_one_line_errors():
    model = build(MLP, [20, 32, 10], seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ConfigError, match="needs data"):
        initialize(model, "lsuv", seed=0)
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))
    for bad in ({"tol": 0}, {"tol": 1.5}, {"max_iter": 0}, {"batch": 1}):
        with pytest.raises(ConfigError):
            get_initializer("lsuv", **bad)


@pytest.mark.slow
def test_pretrained_minilm_reaches_unit_variance_within_ten_iterations():
    from weightlab.models.minilm import load_minilm

    model, tok = load_minilm()
    ids, mask = tok.encode(["the cat sat on the mat", "weights are initialized"] * 4)
    data = {"input_ids": ids, "attention_mask": mask}
    init = LSUV()
    ctxs = initialize(model, init, seed=0, data=data, selector=encoder_linears())
    assert len(ctxs) == 36
    assert all(r.iterations <= 10 for r in init.report)
    assert sum(r.converged for r in init.report) == 36
