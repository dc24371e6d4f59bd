"""Losses, metrics, parameter groups, probes and seeded dropout: the small APIs the loop
and the population engines share."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score
from torch import nn
from torch.nn import functional as F

from weightlab.core import Selector
from weightlab.errors import ConfigError
from weightlab.models import MLP
from weightlab.models.dropout import (
    Dropout,
    dropout_input_shapes,
    dropout_layers,
    dropout_masks,
    dropout_step,
    functional_dropout,
    replace_dropout,
    use_masks,
)
from weightlab.seeding import generator
from weightlab.train.config import ParamGroup
from weightlab.train.groups import resolve_groups
from weightlab.train.losses import (
    check_per_example,
    cross_entropy_per_example,
    mse_per_example,
    resolve_loss,
)
from weightlab.train.metrics import (
    correct_count,
    r2_and_rel_err,
    regression_metrics,
    sse_per_output,
    target_stats,
)
from weightlab.train.probes import (
    Probe,
    ProbeContext,
    check_probes,
    distance_from_init,
    grad_norm,
    relative_change,
    relative_changes,
    run_probes,
    total_distance,
    train_loss,
    weight_norm,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=generator(seed), dtype=dtype)


# ---------------------------------------------------------------- losses


def test_cross_entropy_per_example_matches_torch_and_population_shapes():
    pred = _randn(3, 5, 4)
    y = torch.randint(0, 4, (5,), generator=generator(1))
    per = cross_entropy_per_example(pred, y)
    assert per.shape == (3, 5)
    for i in range(3):
        torch.testing.assert_close(per[i], F.cross_entropy(pred[i], y, reduction="none"))
    y2 = torch.randint(0, 4, (3, 5), generator=generator(2))
    per2 = cross_entropy_per_example(pred, y2)
    torch.testing.assert_close(per2[1], F.cross_entropy(pred[1], y2[1], reduction="none"))
    assert resolve_loss("auto", "classification") is cross_entropy_per_example


def test_mse_per_example_mean_equals_f_mse_loss():
    pred, y = _randn(6, 2, 3), _randn(6, 2, 3, seed=1)
    per = mse_per_example(pred, y)
    assert per.shape == (6,)
    torch.testing.assert_close(per.mean(), F.mse_loss(pred, y))
    # population: (N, B, *out) with a shared target and with per-member targets
    pop = torch.stack([pred, 2 * pred])
    fn = resolve_loss("auto", "regression", output_ndim=2)
    torch.testing.assert_close(fn(pop, y)[1], mse_per_example(2 * pred, y))
    torch.testing.assert_close(fn(pop, torch.stack([y, y]))[0], per)
    # scalar outputs (output_shape ()) and one-hot for integer labels
    torch.testing.assert_close(mse_per_example(pred[:, 0, 0], y[:, 0, 0]), (pred - y)[:, 0, 0] ** 2)
    logits, labels = _randn(4, 3), torch.tensor([0, 2, 1, 2])
    torch.testing.assert_close(
        mse_per_example(logits, labels), ((logits - F.one_hot(labels, 3)) ** 2).mean(1)
    )


def test_loss_errors_and_callable():
    with pytest.raises(ConfigError, match="classification task"):
        resolve_loss("cross_entropy", "regression")
    with pytest.raises(ConfigError, match="do not match targets of shape"):
        mse_per_example(_randn(4, 2), _randn(4, 3))
    with pytest.raises(ConfigError, match=r"must output \(batch, \*\(\)\)"):
        mse_per_example(_randn(4, 1), _randn(4))  # would broadcast to (4, 4)
    with pytest.raises(ConfigError, match="do not fit labels"):
        cross_entropy_per_example(_randn(4, 3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match="integer class labels"):
        cross_entropy_per_example(_randn(4, 2), _randn(4))

    def l1(pred, target):
        return (pred - target).abs().sum(-1)

    assert resolve_loss(l1, "regression") is l1
    with pytest.raises(ConfigError, match="per-example losses of shape"):
        check_per_example(torch.zeros(()), (4,))


# ---------------------------------------------------------------- metrics


def test_regression_metrics_match_sklearn_and_numpy():
    y = _randn(50, 3) * torch.tensor([1.0, 3.0, 0.5]) + 2
    pred = y + 0.3 * _randn(50, 3, seed=5)
    r2, rel = regression_metrics(pred, y)
    assert r2 == pytest.approx(r2_score(y.numpy(), pred.numpy(), multioutput="uniform_average"))
    assert rel == pytest.approx(np.linalg.norm(pred - y) / np.linalg.norm(y))
    # chunked accumulation and population (N, n, *out) give the same numbers
    ss_tot, y_sq = target_stats(y)
    sse = sse_per_output(pred[:20], y[:20]) + sse_per_output(pred[20:], y[20:])
    r2c, relc = r2_and_rel_err(sse, ss_tot, y_sq)
    assert float(r2c) == pytest.approx(r2) and float(relc) == pytest.approx(rel)
    pop = torch.stack([pred, y, torch.zeros_like(y)])
    r2p, relp = r2_and_rel_err(sse_per_output(pop, y), ss_tot, y_sq)
    assert r2p.shape == (3,)
    assert r2p[1] == 1 and relp[1] == 0 and relp[2] == pytest.approx(1.0)
    r2_zero = r2_score(y.numpy(), np.zeros((50, 3)), multioutput="uniform_average")
    assert float(r2p[2]) == pytest.approx(r2_zero)
    # per-member targets need output_ndim
    sse_m = sse_per_output(pop, torch.stack([y, y, y]), output_ndim=1)
    torch.testing.assert_close(sse_m, sse_per_output(pop, y))


def test_r2_constant_target_follows_sklearn_force_finite():
    y = torch.cat([_randn(10, 1), torch.ones(10, 1)], 1)
    for pred in (y.clone(), y + 0.1):
        r2, _ = regression_metrics(pred, y)
        assert r2 == pytest.approx(r2_score(y.numpy(), pred.numpy()))
    # scalar outputs (y of shape (n,))
    y1, p1 = _randn(30), _randn(30, seed=3)
    assert regression_metrics(p1, y1)[0] == pytest.approx(r2_score(y1.numpy(), p1.numpy()))


def test_correct_count():
    pred = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0]] * 3])
    y = torch.tensor([0, 1, 1])
    assert correct_count(pred, y).tolist() == [2, 2]
    assert int(correct_count(pred[0], y)) == 2


# ---------------------------------------------------------------- groups


def test_resolve_groups_first_match_wins_and_selector():
    model = MLP([4, 5, 3])
    names = [n for n, _ in model.named_parameters()]
    groups = (
        ParamGroup(("layers.1.*",), lr_mult=0.5),
        ParamGroup("*.bias", lr_mult=2.0, wd_mult=0.0),
    )
    got = resolve_groups(names, groups)
    assert got == {
        "layers.0.weight": (1.0, 1.0),
        "layers.0.bias": (2.0, 0.0),
        "layers.1.weight": (0.5, 1.0),
        "layers.1.bias": (0.5, 1.0),
    }
    sel = ParamGroup(Selector(roles=("first",)), lr_mult=3.0)
    assert groups[1].globs == ("*.bias",) and sel.globs is None
    assert resolve_groups(names, (sel,), model)["layers.0.weight"] == (3.0, 1.0)
    assert resolve_groups(names, (sel,), model)["layers.1.weight"] == (1.0, 1.0)
    with pytest.raises(ConfigError, match="needs the model"):
        resolve_groups(names, (sel,))


def test_group_matching_nothing_is_one_line_error():
    names = ["layers.0.weight", "layers.0.bias"]
    with pytest.raises(
        ConfigError, match=r"parameter group 1 \(globs 'head\.\*'\) matches no"
    ) as e:
        resolve_groups(names, (ParamGroup("*.bias"), ParamGroup("head.*")))
    assert "parameters are: layers.0.weight, layers.0.bias" in str(e.value)
    assert "\n" not in str(e.value)
    conv_only = ParamGroup(Selector(types=("conv",)))
    with pytest.raises(ConfigError, match="parameter group 0 .*matches no parameter"):
        resolve_groups(names, (conv_only,), MLP([2, 3]))


# ---------------------------------------------------------------- probes


class _BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.bn(self.lin(x)).relu())


def model_params_detached(model):
    return {n: p.detach() for n, p in model.named_parameters()}


def _ctx(model, step=0, grads=None, data=None):
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    return ProbeContext(step, data, resolve_loss("auto", "classification"), init, grads)


def test_builtin_probes_known_answers():
    torch.manual_seed(0)
    model = _BNNet().double()
    ctx = _ctx(model)
    probes = check_probes([weight_norm(2), distance_from_init(2), relative_change(2), grad_norm(2)])
    assert [p.reads_grads for p in probes] == [False, False, False, True]
    assert Probe("u", 1, lambda m, c: 0.0).reads_grads and not train_loss(1).reads_grads
    row0 = run_probes(probes, model, ctx)
    assert row0["step"] == 0 and row0["distance_from_init"] == 0.0
    assert "grad_norm" not in row0  # no gradient at step 0
    assert row0["relative_change/lin.weight"] == 0.0
    assert row0["weight_norm/lin.weight"] == pytest.approx(float(model.lin.weight.detach().norm()))
    assert "weight_norm/lin.bias" not in row0  # default: params with ndim >= 2
    with torch.no_grad():
        model.lin.weight.add_(1.0)
        model.out.bias.add_(2.0)
    g = {n: torch.full_like(p, 0.5) for n, p in model.named_parameters()}
    ctx.step, ctx.grads = 2, g
    assert run_probes(probes, model, ctx.__class__(1, None, ctx.loss_fn, ctx.init)) is None
    row = run_probes(probes, model, ctx)
    n_lin = model.lin.weight.numel()
    assert row["distance_from_init"] == pytest.approx(math.sqrt(n_lin + 4 * 2))
    w0 = ctx.init["lin.weight"]
    assert row["relative_change/lin.weight"] == pytest.approx(math.sqrt(n_lin) / float(w0.norm()))
    assert row["relative_change/out.weight"] == 0.0
    total = sum(p.numel() for p in model.parameters())
    assert row["grad_norm"] == pytest.approx(0.5 * math.sqrt(total))
    assert float(total_distance(model_params_detached(model), ctx.init)) == pytest.approx(
        row["distance_from_init"]
    )
    # vectorized form: a leading member dim
    stacked = {n: torch.stack([ctx.init[n], p.detach()]) for n, p in model.named_parameters()}
    init2 = {n: torch.stack([t, t]) for n, t in ctx.init.items()}
    rc = relative_changes(stacked, init2, member_dims=1)["lin.weight"]
    assert rc[0] == 0 and float(rc[1]) == pytest.approx(row["relative_change/lin.weight"])
    sel = run_probes([weight_norm(1, params=("*.bias",))], model, ctx)
    assert set(sel) == {
        "step",
        "weight_norm/lin.bias",
        "weight_norm/bn.bias",
        "weight_norm/out.bias",
    }


def test_probes_do_not_change_model_mode_or_batchnorm():
    from weightlab.data.task import Split, TaskData

    torch.manual_seed(0)
    model = _BNNet()
    x = _randn(16, 3, dtype=torch.float32)
    y = torch.randint(0, 2, (16,), generator=generator(0))
    data = TaskData("t", Split(x, y), Split(x, y), Split(x, y), 2)
    model(x)  # move running stats off their init values
    before = {n: b.clone() for n, b in model.named_buffers()}

    def meddler(m, ctx):
        m.train()  # a careless probe: forward in train mode would update BN statistics
        m(x)
        return {"mean": m.bn.running_mean.sum()}

    ctx = _ctx(model, data=data)
    row = run_probes([train_loss(1), Probe("meddler", 1, meddler)], model, ctx)
    assert model.training
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), n
    model.eval()
    with torch.no_grad():
        expected = float(F.cross_entropy(model(x), y))
    assert row["train_loss"] == pytest.approx(expected, rel=1e-6)


def test_user_probe_values_are_json_ready_and_limited():
    import json

    model = MLP([2, 3])
    ctx = _ctx(model)

    def fn(m, ctx):
        return {"vec": torch.arange(3.0), "scalar": torch.tensor(2.5), "f": 1}

    row = run_probes([Probe("u", 1, fn), Probe("single", 1, lambda m, c: 7.0)], model, ctx)
    assert row == {"step": 0, "u/vec": [0.0, 1.0, 2.0], "u/scalar": 2.5, "u/f": 1.0, "single": 7.0}
    json.dumps(row)
    with pytest.raises(ConfigError, match="1025 elements"):
        run_probes([Probe("big", 1, lambda m, c: torch.zeros(1025))], model, ctx)
    with pytest.raises(ConfigError, match="every must be an integer"):
        Probe("p", 0, fn)
    with pytest.raises(ConfigError, match="unique"):
        check_probes([Probe("p", 1, fn), Probe("p", 2, fn)])


# ---------------------------------------------------------------- dropout


class _DropNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.d1 = nn.Dropout(0.5)
        self.b = nn.Linear(8, 8)
        self.d2 = nn.Dropout(0.25)
        self.c = nn.Linear(8, 2)

    def forward(self, x):
        return self.c(self.d2(self.b(self.d1(self.a(x)).relu())).relu())


def test_dropout_masks_are_seeded_and_ignore_global_rng():
    model = replace_dropout(_DropNet())
    assert [type(m) for m in dropout_layers(model)] == [Dropout, Dropout]
    x = _randn(5, 4, dtype=torch.float32)
    model.train()

    def fwd(seed, step):
        with dropout_step(model, seed, step):
            return model(x)

    torch.manual_seed(0)
    a = fwd(3, 7)
    torch.manual_seed(123)
    b = fwd(3, 7)
    assert torch.equal(a, b)
    assert not torch.equal(a, fwd(3, 8)) and not torch.equal(a, fwd(4, 7))
    # the explicit masks reproduce the lazily drawn ones
    shapes = dropout_input_shapes(model, x)
    assert shapes == [(5, 8), (5, 8)]
    masks = dropout_masks(model, 3, 7, shapes)
    with use_masks(model, masks):
        c = model(x)
    assert torch.equal(a, c)
    keep = masks[0] != 0
    assert set(masks[0].unique().tolist()) <= {0.0, 2.0}
    assert 0.3 < keep.float().mean() < 0.7
    # eval mode: identity; training forward without a seed: one-line error
    model.eval()
    ref = nn.Sequential(model.a, nn.ReLU(), model.b, nn.ReLU(), model.c)
    torch.testing.assert_close(model(x), ref(x))
    model.train()
    with pytest.raises(ConfigError, match="needs a seed and step"):
        model(x)


def test_dropout_mask_statistics_and_dtype_independence():
    layer = Dropout(0.3).train()
    x = torch.ones(200, 50, dtype=torch.float64)
    with dropout_step([layer], 1, 1):
        y = layer(x)
    assert y.dtype == torch.float64
    assert abs(float((y != 0).double().mean()) - 0.7) < 0.02
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / 0.7))
    with dropout_step([layer], 1, 1):
        y32 = layer(x.float())
    assert torch.equal(y32 != 0, y != 0)
    with pytest.raises(ConfigError, match="in \\[0, 1\\)"):
        Dropout(1.0)
    mha = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1)
    assert functional_dropout(mha) == ["self_attn"]
    assert functional_dropout(nn.Sequential(nn.Dropout2d(0.2))) == ["0"]
    assert functional_dropout(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)) == []
