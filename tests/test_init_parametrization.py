"""abc-parametrizations, base shapes, output scale α and the coordinate check."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError, RunFileError
from weightlab.init.base_shapes import BaseShapes
from weightlab.init.coord_check import coord_check, loglog_slope
from weightlab.init.output_scale import default_lr, output_scale
from weightlab.init.parametrization import (
    PRESETS,
    Record,
    Rule,
    get_parametrization,
    load,
    lr_groups,
    lr_multipliers,
    parametrize,
    record_path,
    save,
)
from weightlab.models import MLP, build
from weightlab.population import MemberSpec, Population
from weightlab.train import OptimConfig, TrainConfig, train

BASE = BaseShapes.infer(MLP([6, 4, 4, 3]), MLP([6, 5, 5, 3]))


def _task(n: int = 96, d: int = 6, k: int = 3, seed: int = 0, regression: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3 * n, d, generator=g)
    if regression:
        y = (x[:, :1] * x[:, 1:2]).float()
        splits = [Split(x[i * n : (i + 1) * n], y[i * n : (i + 1) * n]) for i in range(3)]
        return TaskData("toy", *splits, num_classes=0, kind="regression")
    y = (x[:, :k].argmax(1)).long()
    splits = [Split(x[i * n : (i + 1) * n], y[i * n : (i + 1) * n]) for i in range(3)]
    return TaskData("toy", *splits, num_classes=k)


def _mup_mlp(width: int = 16, seed: int = 0, scheme: str = "mup"):
    m = build(MLP, [6, width, width, 3], seed=seed)
    return m, parametrize(m, scheme, BASE)


def _x(n: int = 8) -> torch.Tensor:
    return torch.randn(n, 6, generator=torch.Generator().manual_seed(5))


# -- base shapes ----------------------------------------------------------------------------
def test_infer_base_shapes_like_make_base_shapes():
    assert BASE.shapes["layers.0.weight"] == (4, None)
    assert BASE.shapes["layers.1.weight"] == (4, 4)
    assert BASE.shapes["layers.2.weight"] == (None, 4)
    assert BASE.shapes["layers.2.bias"] == (None,)
    again = BaseShapes.from_dict(json.loads(json.dumps(BASE.to_dict())))
    assert again == BASE


def test_bad_input_is_config_error():
    m = build(MLP, [6, 16, 16, 3], seed=0)
    with pytest.raises(ConfigError, match="needs base shapes"):
        parametrize(m, "mup")
    with pytest.raises(ConfigError, match="do not match"):
        parametrize(build(MLP, [6, 16, 3], seed=0), "mup", BASE)
    with pytest.raises(ConfigError, match="fixed at 6"):
        parametrize(build(MLP, [7, 16, 16, 3], seed=0), "mup", BASE)
    with pytest.raises(ConfigError, match="unknown parametrization"):
        get_parametrization("xp")
    with pytest.raises(ConfigError, match="identical shapes"):
        BaseShapes.infer(MLP([6, 4, 3]), MLP([6, 4, 3]))
    for a in (0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="alpha"):
            output_scale(m, a)
    parametrize(build(MLP, [6, 16, 16, 3], seed=0), "sp")  # SP needs no base shapes


# -- the presets ----------------------------------------------------------------------------
def test_mup_placement_hand_computed():
    m0 = build(MLP, [6, 16, 16, 3], seed=0)
    m, rec = _mup_mlp(16)  # width_mult 4
    torch.testing.assert_close(m.layers[2].weight, 2 * m0.layers[2].weight)  # × √4
    torch.testing.assert_close(m.layers[1].bias, 2 * m0.layers[1].bias)
    torch.testing.assert_close(m.layers[0].weight, m0.layers[0].weight)
    x = _x()
    h = torch.relu(m.layers[1](torch.relu(m.layers[0](x))))  # hidden bias × 2 inside
    want = nn.functional.linear(h / 4, 2 * m0.layers[2].weight, 2 * m0.layers[2].bias)
    torch.testing.assert_close(m(x), want)
    sgd, adam = lr_multipliers(m, rec, "sgd"), lr_multipliers(m, rec, "adam")
    assert sgd == {
        "layers.0.weight": 4, "layers.0.bias": 4, "layers.1.weight": 1,
        "layers.1.bias": 4, "layers.2.weight": 4, "layers.2.bias": 1,
    }  # fmt: skip
    assert adam["layers.1.weight"] == 0.25 and sum(v != 1 for v in adam.values()) == 1


def test_ntk_and_sp_rules():
    m0 = build(MLP, [6, 16, 16, 3], seed=0)
    m, rec = _mup_mlp(16, scheme="ntk")
    x = _x()
    torch.testing.assert_close(m(x), m0(x))  # same function at init, stored × 2
    torch.testing.assert_close(m.layers[1].weight, 2 * m0.layers[1].weight)
    assert lr_multipliers(m, rec, "sgd")["layers.1.weight"] == 1  # η/n on the effective W
    assert lr_multipliers(m, rec, "adam") == {  # Adam: hidden / m, other width tensors / √m
        "layers.0.weight": 0.5, "layers.0.bias": 0.5, "layers.1.weight": 0.25,
        "layers.1.bias": 0.5, "layers.2.weight": 0.5, "layers.2.bias": 1,
    }  # fmt: skip
    s, rec = _mup_mlp(16, scheme="sp")
    assert set(lr_multipliers(s, rec, "adam").values()) == {1.0}
    assert PRESETS["mup"].rule("output.weight") == Rule(1, -0.5, -1, 0)


def _hidden(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m.layers[1](torch.relu(m.layers[0](x))).detach()


def test_ntk_under_adam_is_the_kernel_regime():
    """3 Adam steps: the function moves O(1) in width, hidden features O(m^-½)."""
    x = _x(32).double()
    y = torch.arange(32) % 3
    df, dh = [], []
    for w in (16, 256):
        m, rec = _mup_mlp(w, scheme="ntk")
        m = m.double()
        mults = lr_multipliers(m, rec, "adam")
        opt = torch.optim.Adam([{"params": [p], "lr": 1e-3 * mults[n]} for n, p in m.named_parameters()])  # fmt: skip
        f0, h0 = m(x).detach(), _hidden(m, x)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
        df.append((m(x).detach() - f0).abs().mean().item())
        dh.append((_hidden(m, x) - h0).abs().mean().item())
    assert abs(loglog_slope([16, 256], df)) < 0.25
    assert loglog_slope([16, 256], dh) < -0.3


def test_folded_is_the_same_function_and_plain():
    a, _ = _mup_mlp(16)
    b, _ = _mup_mlp(16, scheme="mup-folded")
    torch.testing.assert_close(a(_x()), b(_x()))
    assert not list(b.buffers()) and not b._forward_pre_hooks  # plain MLP: fast path


# -- survives copies, replacement, checkpoints ------------------------------------------------
def test_survives_deepcopy_stack_and_parameter_replacement():
    m, rec = _mup_mlp(16)
    x = _x()
    want = m(x)
    torch.testing.assert_close(copy.deepcopy(m)(x), want)
    params, buffers = torch.func.stack_module_state([m, copy.deepcopy(m)])
    out = torch.func.vmap(lambda p, b: torch.func.functional_call(m, (p, b), (x,)))(params, buffers)
    torch.testing.assert_close(out[1], want)
    for layer in m.layers:  # FSDP-style: new Parameter objects
        layer.weight = nn.Parameter(layer.weight.detach().clone())
        layer.bias = nn.Parameter(layer.bias.detach().clone())
    torch.testing.assert_close(m(x), want)
    assert lr_multipliers(m, rec, "sgd")["layers.2.weight"] == 4


def test_save_load_train_and_apply_twice_equals_once(tmp_path):
    m, rec = _mup_mlp(16)
    path = save(m, tmp_path / "model.safetensors", rec)
    stored = json.loads(record_path(path).read_text())
    assert stored["weights_scaled"] is True and stored["base_shapes"]["base"]
    fresh = build(MLP, [6, 16, 16, 3], seed=1)
    rec2 = load(fresh, path)
    x = _x()
    torch.testing.assert_close(fresh(x), m(x))
    parametrize(fresh, rec2)  # again: no second rescale, no second multiplier
    torch.testing.assert_close(fresh(x), m(x))
    for scheme in ("mup", "mup-folded"):  # rescaling a parametrized model is an error
        with pytest.raises(ConfigError, match="already parametrized"):
            parametrize(fresh, scheme, BASE)
        with pytest.raises(ConfigError, match="already parametrized"):
            parametrize(copy.deepcopy(m), scheme, BASE)
    torch.testing.assert_close(fresh(x), m(x))
    assert len(fresh.layers[2]._forward_pre_hooks) == 1
    data = _task()
    cfg = TrainConfig(epochs=2, batch_size=32, optim=OptimConfig("sgd", lr=0.1))
    r1 = train(m, data, _with_groups(cfg, m, rec), 0)
    r2 = train(fresh, data, _with_groups(cfg, fresh, rec2), 0)
    assert r1.history[-1].val_loss == pytest.approx(r2.history[-1].val_loss, rel=1e-6)
    with pytest.raises(Exception, match="missing"):
        load(fresh, tmp_path / "other.safetensors")
    assert Record.load(record_path(path)).abc.name == "mup"
    for bad in ({"format": 1}, {"format": 1, "parametrization": "x"},
                {"format": 1, "parametrization": {"rules": {"bias": [0, 0, "a", 0]}}}):  # fmt: skip
        with pytest.raises(RunFileError, match="malformed parametrization record"):
            Record.from_dict(bad)


def _with_groups(cfg, model, rec):
    from dataclasses import replace

    return replace(cfg, optim=replace(cfg.optim, groups=lr_groups(model, rec, cfg.optim.name)))


def test_loop_uses_lr_groups_like_torch():
    """One SGD step of the loop equals a hand step with per-tensor lrs m^{-c}."""
    m, rec = _mup_mlp(16)
    ref = copy.deepcopy(m)
    data = _task(n=32)
    cfg = TrainConfig(epochs=1, batch_size=32, optim=OptimConfig("sgd", lr=0.1))
    train(m, data, _with_groups(cfg, m, rec), 0)
    loss = nn.functional.cross_entropy(ref(data.train.x), data.train.y)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    mults = lr_multipliers(ref, rec, "sgd")
    for (n, p), g in zip(ref.named_parameters(), grads, strict=True):
        torch.testing.assert_close(dict(m.named_parameters())[n], p - 0.1 * mults[n] * g)


def test_population_of_parametrized_members_equals_loop():
    data = _task()
    widths_seed = [0, 1]

    def factory(seed):
        return _mup_mlp(16, seed=seed)[0]

    m0, rec = _mup_mlp(16)
    cfg = _with_groups(TrainConfig(epochs=2, batch_size=32, optim=OptimConfig("adam", lr=0.01)),
                       m0, rec)  # fmt: skip
    pop = Population(factory, [MemberSpec(s) for s in widths_seed], dtype=torch.float64)
    res = pop.fit(data, cfg)
    for i, s in enumerate(widths_seed):
        alone = factory(s).double()
        r = train(alone, data, cfg, 0, seed=s, dtype=torch.float64)
        assert res[i].history[-1].val_loss == pytest.approx(r.history[-1].val_loss, rel=1e-9)


# -- output scale α ---------------------------------------------------------------------------
def test_output_scale_is_zero_at_init_on_every_input_and_frozen():
    m = build(MLP, [6, 16, 1], seed=0)
    f = output_scale(m, 3.0)
    for x in (_x(), torch.randn(4, 6)):
        assert torch.count_nonzero(f(x)) == 0
    names = [n for n, _ in f.named_parameters()]
    assert names and all(n.startswith("model.") for n in names)
    assert default_lr(0.5, 2.0) == 0.125


def test_output_scale_function_speed_is_eta_alpha_squared():
    """One SGD step under MSE moves f by -η α² K (f - y): with η = η₀/α² the change is the
    same for every α (to first order in η₀)."""
    data = _task(n=32, regression=True)
    moves = []
    for alpha in (1.0, 4.0):
        f = output_scale(build(MLP, [6, 32, 1], seed=0).double(), alpha)
        cfg = TrainConfig(
            epochs=1, batch_size=32, optim=OptimConfig("sgd", lr=default_lr(1e-4, alpha))
        )
        train(f, data, cfg, 0, dtype=torch.float64)
        moves.append(f(data.test.x.double()).detach())
    torch.testing.assert_close(moves[0], moves[1], rtol=2e-3, atol=1e-9)
    assert moves[0].abs().max() > 1e-6


def test_output_scale_trains_in_loop_and_population():
    data = _task(regression=True)

    def factory(seed):
        return output_scale(build(MLP, [6, 16, 1], seed=seed), 2.0)

    cfg = TrainConfig(epochs=3, batch_size=32, optim=OptimConfig("sgd", lr=default_lr(0.1, 2.0)))
    res = Population(factory, [MemberSpec(0), MemberSpec(1)], dtype=torch.float64).fit(data, cfg)
    for i in (0, 1):
        r = train(factory(i).double(), data, cfg, 0, seed=i, dtype=torch.float64)
        assert res[i].history[-1].val_loss == pytest.approx(r.history[-1].val_loss, rel=1e-9)
        assert r.history[-1].train_loss < r.history[0].train_loss


def test_members_with_different_alpha_train_as_one_population():
    """α is a buffer: per-member α (through init_state) and lr η₀/α² in one population equal
    each member trained alone; α survives a state dict."""
    from weightlab.core import take_snapshot

    data = _task(regression=True)
    alphas = (0.5, 2.0, 8.0)

    def factory(seed):
        return output_scale(build(MLP, [6, 16, 1], seed=seed), 1.0)

    def alone(seed, a):
        return output_scale(build(MLP, [6, 16, 1], seed=seed), a)

    specs = [
        MemberSpec(
            i,
            init_state=take_snapshot(alone(i, a)),
            optim=OptimConfig("sgd", lr=default_lr(0.1, a)),
        )
        for i, a in enumerate(alphas)
    ]
    cfg = TrainConfig(epochs=3, batch_size=32)
    pop = Population(factory, specs, dtype=torch.float64)
    res = pop.fit(data, cfg)
    for i, a in enumerate(alphas):
        assert float(pop.state(i)["alpha"]) == a
        one = TrainConfig(epochs=3, batch_size=32, optim=OptimConfig("sgd", lr=default_lr(0.1, a)))
        r = train(alone(i, a).double(), data, one, 0, seed=i, dtype=torch.float64)
        assert res[i].history[-1].val_loss == pytest.approx(r.history[-1].val_loss, rel=1e-9)
    m = factory(0)
    m.load_state_dict(alone(0, 8.0).state_dict())
    assert float(m.alpha) == 8.0 and "alpha=8" in repr(m)


# -- coordinate check -------------------------------------------------------------------------
def test_loglog_slope_known_answer():
    assert loglog_slope([1, 2, 4, 8], [3, 6, 12, 24]) == pytest.approx(1.0)
    assert loglog_slope([1, 4], [1, 0.5]) == pytest.approx(-0.5)


def test_coord_check_mup_flat_sp_grows():
    data = _task(n=160)

    def build_for(scheme):
        def b(w):
            m = build(MLP, [6, w, w, 3], seed=0)
            rec = parametrize(m, scheme, BASE if scheme != "sp" else None)
            opt = OptimConfig("adam", lr=0.02, groups=lr_groups(m, rec, "adam"))
            return m, TrainConfig(batch_size=32, optim=opt)

        return b

    mu = coord_check(build_for("mup"), [16, 64, 256], data, steps=3)
    sp = coord_check(build_for("sp"), [16, 64, 256], data, steps=3)
    assert mu.max_abs_slope([1, 2, 3]) < 0.2  # every layer flat under μP
    assert min(sp.slopes[t]["layers.2"] for t in (1, 2, 3)) > 0.5  # SP's output grows
    assert sp.slopes[3]["layers.1"] > 0.3 > abs(sp.slopes[0]["layers.1"])
    with pytest.raises(ConfigError, match="two widths"):
        coord_check(build_for("sp"), [16], data)
