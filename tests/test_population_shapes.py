"""Populations beyond one MLP shape: width buckets, the generic (vmap) path on many module
kinds, the per-member sequential path, and seeded dropout. Every population member must
equal the same member trained alone by ``weightlab.train.train`` (float64, 100 steps,
rtol 1e-4, atol 1e-6)."""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import population_helpers as helpers
import pytest
import torch
from population_helpers import (
    ATOL,
    F64,
    RTOL,
    assert_result_close,
    assert_state_close,
    solo,
)
from torch import nn
from torch.nn import functional as F

from weightlab.core import take_snapshot
from weightlab.data import TaskData
from weightlab.data.task import make_regression_split
from weightlab.errors import ConfigError
from weightlab.models import CNN1D, MLP, model_factory
from weightlab.models.dropout import Dropout
from weightlab.models.rnn import CellRNN, SeqRNN
from weightlab.models.siren import SIREN, siren_factory
from weightlab.population import (
    BucketedPopulation,
    MemberSpec,
    Population,
    useful_matmul_flops,
)
from weightlab.seeding import generator
from weightlab.train import OptimConfig, ParamGroup, TrainConfig
from weightlab.train.probes import distance_from_init, grad_norm, weight_norm

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning"),
]

CFG = TrainConfig(epochs=10, batch_size=32, eval_every=50)  # 320 examples: 100 steps
SGD = OptimConfig("sgd", lr=0.05, momentum=0.9)
ADAM = OptimConfig("adam", lr=1e-3)


@pytest.fixture(scope="module")
def data(mnist1d_slice) -> TaskData:
    return mnist1d_slice


def check(factory, specs, data, cfg=CFG, **kw):
    """:func:`population_helpers.check` (population vs the loop, member by member) with this
    module's 100-step config by default; returns (population, results, solo results)."""
    return helpers.check(factory, specs, data, cfg, **kw)


# -- width buckets ---------------------------------------------------------------------------
def test_width_sweep_equals_each_member_alone(data):
    widths = (16, 32, 48)
    factories = {w: model_factory(MLP, [40, w, w, 10]) for w in widths}
    # interleaved order, one member with its own data order and optimizer
    members = [(w, MemberSpec(seed=s)) for s in (0, 1) for w in widths]
    members[4] = (members[4][0], MemberSpec(seed=1, data_seed=7, optim=SGD))
    pop = Population.sweep(factories, members, dtype=F64)
    assert isinstance(pop, BucketedPopulation) and len(pop) == 6
    assert [b.key for b in pop.buckets] == list(widths)
    assert [b.members for b in pop.buckets] == [(0, 3), (1, 4), (2, 5)]
    results = pop.fit(data, CFG)
    for i, (w, spec) in enumerate(members):
        model, ref = solo(factories[w], spec, data, CFG)
        assert pop.key(i) == w
        assert pop.state(i)["layers.1.weight"].shape == (w, w)
        assert_state_close(pop.state(i), take_snapshot(model))
        assert_result_close(results[i], ref)
    losses, accs = pop.evaluate(data.test)  # in member order, like the results
    want = torch.tensor([r.final.test_loss for r in results], dtype=torch.float64)
    torch.testing.assert_close(losses.double(), want, rtol=RTOL, atol=ATOL)
    assert accs.tolist() == [r.final.test_acc for r in results]


def test_useful_flops_count_matmuls_without_padding(data):
    widths = (16, 64)
    factories = {w: model_factory(MLP, [40, w, w, 10]) for w in widths}
    pop = BucketedPopulation(
        factories, [(w, MemberSpec(seed=s)) for w in widths for s in (0, 1, 2)]
    )
    batch = 60
    flops = pop.useful_flops(data.train.x, batch)

    def mlp(ws):  # forward + weight-gradient everywhere, input-gradient except layer 1
        return sum(
            2 * batch * a * b * (2 if i == 0 else 3)
            for i, (a, b) in enumerate(zip(ws[:-1], ws[1:], strict=True))
        )

    assert flops == {w: mlp([40, w, w, 10]) for w in widths}
    assert pop.useful_flops_per_step(data.train.x, batch) == 3 * sum(flops.values())
    # CNN1D(32, 32, kernel 5, BatchNorm): 20.35 MFLOP per member-step at batch 60
    cnn = model_factory(CNN1D, channels=(32, 32), kernel=5, batchnorm=True)(0)
    assert useful_matmul_flops(cnn, data.train.x[:60]) == 20_352_000


def test_sweep_rejects_unknown_keys():
    f = {64: model_factory(MLP, [40, 64, 10])}
    with pytest.raises(ConfigError, match="unknown key 128"):
        Population.sweep(f, [(64, MemberSpec(0)), (128, MemberSpec(1))])
    with pytest.raises(ConfigError, match="at least one member"):
        Population.sweep(f, [])


def test_sweep_checks_every_bucket_before_training_and_forwards_probes(data):
    factories = {
        "deep": model_factory(MLP, [40, 16, 16, 10]),
        "shallow": model_factory(MLP, [40, 16, 10]),
    }
    pop = Population.sweep(factories, [("deep", MemberSpec(0)), ("shallow", MemberSpec(1))])
    before = [pop.state(i) for i in range(2)]
    groups = (ParamGroup(("layers.2.*",), lr_mult=0.5),)  # the shallow MLP has no layers.2
    with pytest.raises(ConfigError, match="matches no parameter"):
        pop.fit(data, replace(CFG, optim=OptimConfig("adam", groups=groups)))
    for i, state in enumerate(before):  # the deep bucket did not train either
        for k, v in state.items():
            assert torch.equal(pop.state(i)[k], v), (i, k)
    results = pop.fit(data, replace(CFG, epochs=1), probes=(weight_norm(5),))
    assert [r["step"] for r in results[0].probes] == [0, 5, 10]
    assert "weight_norm/layers.2.weight" in results[0].probes[-1]
    assert "weight_norm/layers.2.weight" not in results[1].probes[-1]


# -- generic path: module kinds -----------------------------------------------------------
@pytest.mark.parametrize("optim", [SGD, ADAM], ids=["sgd", "adam"])
def test_cnn1d_batchnorm(data, optim):
    f = model_factory(CNN1D, channels=(8, 8), kernel=5, batchnorm=True)
    pop, _, _ = check(f, [MemberSpec(seed=s, optim=optim) for s in (0, 1)], data)
    assert any(k.endswith("running_mean") for k in pop.state(0))


@pytest.mark.parametrize("cell", ["rnn_cell", "linear"])
def test_unrolled_rnn_on_the_vmap_path(data, cell, caplog):
    caplog.set_level(logging.INFO, logger="weightlab")
    f = model_factory(CellRNN, features=5, hidden=16, cell=cell)
    check(f, [MemberSpec(seed=s) for s in (0, 1)], data)
    assert "torch.func vmap path" in caplog.text
    assert "sequential" not in caplog.text


def test_nn_rnn_takes_the_sequential_path(data, caplog):
    caplog.set_level(logging.INFO, logger="weightlab")
    f = model_factory(SeqRNN, features=5, hidden=16, kind="rnn")
    check(f, [MemberSpec(seed=0), MemberSpec(seed=1, optim=SGD)], data)
    lines = [r.getMessage() for r in caplog.records if r.name == "weightlab"]
    assert len(lines) == 1
    assert "per-member sequential path" in lines[0] and "rnn_tanh" in lines[0]


def test_sequential_path_runs_the_built_in_probes(data):
    f = model_factory(SeqRNN, features=5, hidden=8)
    probes = [weight_norm(5), distance_from_init(5), grad_norm(5)]
    specs = [MemberSpec(seed=0), MemberSpec(seed=1)]
    _, results, _ = check(
        f, specs, data, replace(CFG, epochs=2), probes=probes
    )  # rows as the loop's
    last = results[0].probes[-1]
    assert last["step"] == 20 and {"distance_from_init", "grad_norm"} <= set(last)


def test_lstm_and_gru_take_the_sequential_path(data, caplog):
    caplog.set_level(logging.INFO, logger="weightlab")
    short = replace(CFG, epochs=2)  # 20 steps
    for kind in ("lstm", "gru"):
        check(
            model_factory(SeqRNN, features=5, hidden=8, kind=kind),
            [MemberSpec(seed=3)],
            data,
            short,
        )
        assert f"aten::{kind}" in caplog.text


class ItemNormalized(nn.Module):
    """Divides its hidden layer by a Python float read off it (``.item()`` on a value that
    depends on the member's weights, which ``vmap`` cannot batch): a user module, not an
    RNN, that takes the sequential path."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(40, 16)
        self.out = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.hidden(x))
        return self.out(h / float(h.detach().abs().max()))


def test_any_module_vmap_rejects_falls_back(data, caplog):
    caplog.set_level(logging.INFO, logger="weightlab")
    check(model_factory(ItemNormalized), [MemberSpec(seed=0), MemberSpec(seed=1)], data)
    assert "ItemNormalized: per-member sequential path" in caplog.text


class TinyTransformer(nn.Module):
    """Sequence classifier: Linear embedding of 5-value steps, one post-norm
    ``nn.TransformerEncoderLayer`` (dropout 0), mean pooling, Linear head."""

    def __init__(self, d: int = 16, heads: int = 2, ff: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(5, d)
        self.block = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(self.embed(x.reshape(x.shape[0], -1, 5)))
        return self.head(h.mean(1))


def test_transformer_encoder_block(data):
    check(model_factory(TinyTransformer), [MemberSpec(seed=0), MemberSpec(seed=1)], data)


def test_siren_regression_float64():
    """SIREN 1-32-32-1 (omega0 = 30) regressing a 1-D signal, MSE, Adam lr 1e-3, 100 steps.
    float64: in float32 the sine layers amplify rounding (measured here: float32 population
    and float64 loop differ by up to 2% in some weights after 100 steps)."""
    t = torch.linspace(-1, 1, 200, dtype=torch.float64).unsqueeze(1)
    y = torch.sin(3 * math.pi * t) + 0.5 * torch.cos(7 * math.pi * t)
    g = generator(0)
    perm = torch.randperm(200, generator=g)
    tr, va, te = perm[:128], perm[128:164], perm[164:]
    task = TaskData(
        "signal",
        make_regression_split(t[tr], y[tr]),
        make_regression_split(t[va], y[va]),
        make_regression_split(t[te], y[te]),
        0,
        kind="regression",
        output_shape=(1,),
    )
    f = siren_factory([1, 32, 32, 1])
    cfg = TrainConfig(epochs=25, batch_size=32, eval_every=50, optim=OptimConfig("adam", lr=1e-3))
    _, results, _ = check(f, [MemberSpec(seed=s) for s in (0, 1)], task, cfg)
    for r in results:  # a SIREN fits this two-tone signal within 100 Adam steps
        assert r.final.val_r2 > 0.99 and r.final.test_rel_err < 0.1


def test_siren_init_follows_the_paper():
    m = siren_factory([1, 256, 256, 1], omega0=30.0)(0)
    assert isinstance(m, SIREN)
    w0, w1, w2 = (m.layers[0].linear.weight, m.layers[1].linear.weight, m.layers[2].weight)
    w0, w1, w2 = w0.detach(), w1.detach(), w2.detach()
    assert 0.95 < float(w0.abs().max()) <= 1.0  # fan-in 1: U(-1, 1)
    bound = math.sqrt(6 / 256) / 30  # U(-sqrt(6/n)/w0, sqrt(6/n)/w0) with n = 256
    assert 0.9 * bound < float(w2.abs().max()) <= bound
    assert 0.999 * bound < float(w1.abs().max()) <= bound
    assert abs(float(w1.var()) - bound**2 / 3) < 0.02 * bound**2 / 3  # 65,536 draws
    torch.testing.assert_close(
        m(torch.zeros(3, 1)), siren_factory([1, 256, 256, 1])(0)(torch.zeros(3, 1))
    )


# -- parameter groups (muP-style) across widths ----------------------------------------------
def test_mup_style_groups_in_a_width_sweep(data):
    """muP for Adam (Yang et al. 2021, Table 3): hidden and output weights get lr ∝ 1/fan_in
    relative to a base width; input weights and biases keep the base lr."""
    base = 16
    widths = (16, 32)
    factories = {w: model_factory(MLP, [40, w, w, 10]) for w in widths}

    def optim(w):
        mult = base / w
        return OptimConfig(
            "adam",
            lr=2e-3,
            groups=(ParamGroup(("layers.1.weight", "layers.2.weight"), lr_mult=mult),),
        )

    members = [(w, MemberSpec(seed=s, optim=optim(w))) for w in widths for s in (0, 1)]
    pop = Population.sweep(factories, members, dtype=F64)
    results = pop.fit(data, CFG)
    for i, (w, spec) in enumerate(members):
        model, ref = solo(factories[w], spec, data, CFG)
        assert_state_close(pop.state(i), take_snapshot(model))
        assert_result_close(results[i], ref)


# -- dropout ----------------------------------------------------------------------------------
class DropoutMLP(nn.Module):
    """40-32-32-10 ReLU MLP with weightlab Dropout(p) after each hidden layer."""

    def __init__(self, p: float = 0.2, torch_dropout: bool = False) -> None:
        super().__init__()
        drop = nn.Dropout if torch_dropout else Dropout
        self.net = nn.Sequential(
            nn.Linear(40, 32),
            nn.ReLU(),
            drop(p),
            nn.Linear(32, 32),
            nn.ReLU(),
            drop(p),
            nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_mlp_with_weightlab_dropout_equals_the_loop(data):
    f = model_factory(DropoutMLP, 0.2)
    pop, _, _ = check(f, [MemberSpec(seed=0), MemberSpec(seed=1, data_seed=5, optim=SGD)], data)
    # the masks matter: without dropout the same members end elsewhere
    plain = Population(model_factory(DropoutMLP, 0.0), [MemberSpec(seed=0)], dtype=F64)
    plain.fit(data, CFG)
    assert not torch.allclose(plain.state(0)["net.0.weight"], pop.state(0)["net.0.weight"])


def test_torch_dropout_is_replaced_as_in_the_loop(data):
    f = model_factory(DropoutMLP, 0.2, torch_dropout=True)
    short = replace(CFG, epochs=2)
    check(f, [MemberSpec(seed=4)], data, short)


class RNNDropout(nn.Module):
    """``nn.RNN`` (sequential path) with weightlab Dropout on its last output."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = SeqRNN(features=5, hidden=8)
        self.drop = Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn.rnn(x.reshape(x.shape[0], -1, 5))
        return self.rnn.head(self.drop(out[:, -1]))


def test_dropout_on_the_sequential_path(data):
    check(
        model_factory(RNNDropout),
        [MemberSpec(seed=0), MemberSpec(seed=1)],
        data,
        replace(CFG, epochs=3),
    )


class FunctionalDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(40, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(F.dropout(x, 0.1, self.training))


def test_dropout_inside_a_functional_call_is_refused(data):
    def attn(seed):
        m = TinyTransformer()
        m.block.self_attn.dropout = 0.1
        return m

    cases = [
        (attn, r"block\.self_attn \(MultiheadAttention\).*set its dropout to 0"),
        (model_factory(SeqRNN, features=5, hidden=8, num_layers=2), None),
        (model_factory(FunctionalDropout), "global RNG"),
    ]
    rnn = cases[1][0](0)
    rnn.rnn.dropout = 0.3
    cases[1] = (lambda seed: rnn, r"rnn \(RNN\) has dropout=0\.3")
    for factory, pattern in cases:
        pop = Population(factory, [MemberSpec(seed=0), MemberSpec(seed=1)])
        with pytest.raises(ConfigError, match=pattern) as e:
            pop.fit(data, replace(CFG, epochs=1))
        assert "\n" not in str(e.value)
