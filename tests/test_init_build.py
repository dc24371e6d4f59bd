"""models.build, the init schemes (coverage, fans, statistics, determinism, RNG hygiene)
and weights drawn straight into stacked population buffers (bit-identical to build)."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch
from torch import nn

import weightlab.init.stacked as stacked_mod
from weightlab.core.snapshots import take_snapshot
from weightlab.errors import ConfigError
from weightlab.init import INIT_SCHEMES, init_module_
from weightlab.init.stacked import draw_stacked
from weightlab.models import CNN1D, MLP, build, model_factory
from weightlab.models.siren import SineLayer, siren_factory
from weightlab.population import MemberSpec, Population
from weightlab.seeding import generator

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEMES = tuple(INIT_SCHEMES)


def expected_std(scheme: str, fan_in: int, fan_out: int) -> float:
    """Weight std of each scheme: U(±1/√fan_in) has std 1/√(3·fan_in)."""
    if scheme == "kaiming_uniform":
        return 1.0 / math.sqrt(3 * fan_in)
    if scheme == "glorot_normal":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if scheme == "kaiming_normal":
        return math.sqrt(2.0 / fan_in)
    raise AssertionError(scheme)


class One(nn.Module):
    """Wraps one layer so build() can construct it from a class and arguments."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.layer = LAYERS[kind][0]()


# kind -> (constructor, [(param, row blocks, fan_in, fan_out)])
LAYERS = {
    "linear": (lambda: nn.Linear(400, 300), [("weight", 1, 400, 300)]),
    "conv1d": (lambda: nn.Conv1d(64, 128, 5), [("weight", 1, 64 * 5, 128 * 5)]),
    "conv2d_groups": (
        lambda: nn.Conv2d(32, 64, 3, groups=4),
        [("weight", 1, 8 * 9, 64 * 9)],
    ),
    "conv3d": (lambda: nn.Conv3d(16, 32, 3), [("weight", 1, 16 * 27, 32 * 27)]),
    "convT1d_groups": (
        lambda: nn.ConvTranspose1d(64, 128, 5, groups=2),
        [("weight", 1, 32 * 5, 64 * 5)],
    ),
    "convT2d": (lambda: nn.ConvTranspose2d(64, 32, 3), [("weight", 1, 64 * 9, 32 * 9)]),
    "embedding": (lambda: nn.Embedding(1000, 64), [("weight", 1, 1000, 64)]),
    "lstm": (
        lambda: nn.LSTM(50, 200),
        [("weight_ih_l0", 4, 50, 200), ("weight_hh_l0", 4, 200, 200)],
    ),
    "lstm_proj": (
        lambda: nn.LSTM(300, 200, proj_size=64),
        [("weight_hh_l0", 4, 64, 200), ("weight_hr_l0", 1, 200, 64)],
    ),
    "gru2": (
        lambda: nn.GRU(30, 100, num_layers=2),
        [("weight_ih_l1", 3, 100, 100), ("weight_hh_l1", 3, 100, 100)],
    ),
    "rnncell": (
        lambda: nn.RNNCell(300, 128),
        [("weight_ih", 1, 300, 128), ("weight_hh", 1, 128, 128)],
    ),
    "lstmcell": (lambda: nn.LSTMCell(64, 150), [("weight_ih", 4, 64, 150)]),
    "mha": (
        lambda: nn.MultiheadAttention(256, 4),
        [("in_proj_weight", 3, 256, 256), ("out_proj.weight", 1, 256, 256)],
    ),
    "mha_kdim": (
        lambda: nn.MultiheadAttention(128, 4, kdim=400, vdim=300),
        [("k_proj_weight", 1, 400, 128), ("v_proj_weight", 1, 300, 128)],
    ),
}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("kind", list(LAYERS))
def test_weight_std_matches_the_scheme_per_layer_and_gate_block(kind, scheme):
    model = build(One, kind, seed=1, init=scheme)
    params = dict(model.layer.named_parameters())
    for name, blocks, fan_in, fan_out in LAYERS[kind][1]:
        w = params[name].detach().double()
        want = expected_std(scheme, fan_in, fan_out)
        for block in w.chunk(blocks, dim=0):  # each gate / q-k-v block on its own
            assert block.std().item() == pytest.approx(want, rel=0.04), (name, block.shape)
            assert abs(block.mean().item()) < 0.05 * want
            if scheme == "kaiming_uniform":
                assert block.abs().max().item() <= math.sqrt(3) * want * (1 + 1e-6)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_bias_policy(scheme):
    """kaiming_uniform: biases U(±1/√fan_in of their weight) (PyTorch's default); the
    normal schemes: zero. MultiheadAttention biases are zero in every scheme."""
    lin = build(One, "linear", seed=0, init=scheme).layer
    rnn = build(One, "rnncell", seed=0, init=scheme).layer
    mha = build(One, "mha", seed=0, init=scheme).layer
    assert torch.count_nonzero(mha.in_proj_bias) == 0
    assert torch.count_nonzero(mha.out_proj.bias) == 0
    if scheme == "kaiming_uniform":
        for bias, fan_in in ((lin.bias, 400), (rnn.bias_ih, 300), (rnn.bias_hh, 128)):
            bound = 1 / math.sqrt(fan_in)
            assert bias.abs().max().item() <= bound
            assert bias.abs().max().item() > 0.8 * bound  # spread over the whole interval
    else:
        for bias in (lin.bias, rnn.bias_ih, rnn.bias_hh):
            assert torch.count_nonzero(bias) == 0


def test_embedding_padding_row_is_zero():
    emb = build(nn.Embedding, 50, 8, padding_idx=3, seed=0)
    assert torch.count_nonzero(emb.weight[3]) == 0
    assert torch.count_nonzero(emb.weight[2]) == 8


class Zoo(nn.Module):
    """Every covered layer type plus a norm of each kind and a constant buffer."""

    def __init__(self, width: int = 12) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, width)
        self.conv = nn.Conv1d(width, width, 3)
        self.conv2 = nn.Conv2d(2, 4, 3)
        self.conv3 = nn.Conv3d(2, 3, 2)
        self.convt = nn.ConvTranspose2d(4, 2, 3)
        self.bn = nn.BatchNorm1d(width)
        self.ln = nn.LayerNorm(width)
        self.gn = nn.GroupNorm(3, width)
        self.lstm = nn.LSTM(width, width, num_layers=2, bidirectional=True, proj_size=4)
        self.gru = nn.GRUCell(width, width)
        self.mha = nn.MultiheadAttention(width, 2, add_bias_kv=True)
        self.head = nn.Linear(width, 3)
        self.register_buffer("scale", torch.arange(5, dtype=torch.float32) + 0.5)


def test_build_covers_every_layer_type_deterministically():
    a, b, c = build(Zoo, seed=3), build(Zoo, seed=3), build(Zoo, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    random = [k for k, v in sa.items() if v.is_floating_point() and v.std() > 0]
    assert {"emb.weight", "conv3.weight", "convt.weight", "lstm.weight_hr_l0", "mha.bias_k"} <= set(
        random
    )
    for k in random:
        if k != "scale":
            assert not torch.equal(sa[k], sc[k]), k


def test_constructor_buffers_keep_their_values():
    """build() constructs on the CPU, not on meta: buffers are the constructor's."""
    model = build(Zoo, seed=0)
    assert torch.equal(model.scale, torch.arange(5, dtype=torch.float32) + 0.5)


@pytest.mark.parametrize("norm", ["bn", "ln", "gn"])
def test_norms_get_weight_one_bias_zero_and_fresh_statistics(norm):
    model = build(Zoo, seed=0)
    layer = getattr(model, norm)
    with torch.no_grad():
        layer.weight.mul_(3).add_(1)
        layer.bias.add_(2)
    if norm == "bn":
        layer.train()
        layer(torch.randn(8, 12, generator=generator(0)) * 5 + 3)
        assert int(layer.num_batches_tracked) == 1
    init_module_(model, 5)
    assert torch.equal(layer.weight, torch.ones(12))
    assert torch.equal(layer.bias, torch.zeros(12))
    if norm == "bn":
        assert torch.equal(layer.running_mean, torch.zeros(12))
        assert torch.equal(layer.running_var, torch.ones(12))
        assert int(layer.num_batches_tracked) == 0


def test_build_never_reseeds_cuda_and_leaves_global_rng_alone(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("build must not seed the CUDA generators")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", refuse)
    monkeypatch.setattr(torch.cuda, "manual_seed", refuse)
    torch.default_generator.manual_seed(1234)
    before = torch.get_rng_state()
    model = build(Seq, seed=0)  # includes a layer reset by its own reset_parameters
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(build(Seq, seed=0).bil.weight, model.bil.weight)


class Seq(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.bil = nn.Bilinear(4, 4, 2)  # no scheme: reset_parameters under a seeded fork
        self.prelu = nn.PReLU()


def test_other_layers_use_their_reset_parameters_seeded_from_the_seed():
    a, b = build(Seq, seed=0), build(Seq, seed=1)
    assert not torch.equal(a.bil.weight, b.bil.weight)
    assert torch.equal(a.prelu.weight, torch.full((1,), 0.25))
    # independent of the global RNG
    torch.default_generator.manual_seed(99)
    assert torch.equal(build(Seq, seed=0).bil.weight, a.bil.weight)


class NoReset(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(3))


def test_layer_with_parameters_and_no_reset_parameters_fails_clearly():
    with pytest.raises(ConfigError, match="NoReset.*reset_parameters"):
        build(NoReset, seed=0)


def test_unknown_scheme_fails_clearly():
    with pytest.raises(ConfigError, match="unknown init scheme 'xavier'"):
        build(MLP, [3, 2], seed=0, init="xavier")
    with pytest.raises(ConfigError, match="unknown init scheme"):
        model_factory(MLP, [3, 2], init="xavier")


def test_kaiming_uniform_stream_is_pinned():
    """The weights of existing runs: U(±1/√fan_in) from generator(seed), weight then bias,
    layers in module order, drawn in float64 and rounded to float32."""
    model = build(MLP, [4, 3, 2], seed=7)
    g = generator(7)
    for layer, fan_in in zip(model.layers, (4, 3), strict=True):
        w = torch.rand((layer.out_features, fan_in), generator=g, dtype=torch.float64) * 2 - 1
        b = torch.rand((layer.out_features,), generator=g, dtype=torch.float64) * 2 - 1
        assert torch.equal(layer.weight, w.mul_(1 / math.sqrt(fan_in)).float())
        assert torch.equal(layer.bias, b.mul_(1 / math.sqrt(fan_in)).float())


def test_siren_stream_is_pinned():
    """SIREN's paper init (first layer U(±1/n), others U(±sqrt(6/n)/ω0), biases U(±1/√n))
    uses the schemes' uniform draw: float64 from generator(seed), rounded to float32."""
    model = siren_factory([2, 4, 3], omega0=30.0)(7)
    g = generator(7)
    for i, layer in enumerate(model.layers):
        lin = layer.linear if isinstance(layer, SineLayer) else layer
        n = lin.in_features
        for t, bound in ((lin.weight, 1 / n if i == 0 else math.sqrt(6 / n) / 30.0),
                         (lin.bias, 1 / math.sqrt(n))):  # fmt: skip
            u = torch.rand(t.shape, generator=g, dtype=torch.float64) * 2 - 1
            assert torch.equal(t, u.mul_(bound).float()), (i, tuple(t.shape))


# -- stacked drawing ----------------------------------------------------------------------


class Attn(nn.Module):
    """A non-MLP architecture the plan fully covers (attention, RNN, embedding, norms)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, width, padding_idx=0)
        self.mha = nn.MultiheadAttention(width, 2)
        self.gru = nn.GRU(width, width)
        self.ln = nn.LayerNorm(width)
        self.bn = nn.BatchNorm1d(width)
        self.convt = nn.ConvTranspose1d(width, 4, 3)
        self.head = nn.Linear(width, 5)


FACTORIES = {
    "mlp": lambda init: model_factory(MLP, [40, 100, 100, 10], init=init),
    "mlp_tanh": lambda init: model_factory(MLP, [7, 5, 3], activation="tanh", init=init),
    "cnn": lambda init: model_factory(CNN1D, channels=(8, 8), init=init),
    "cnn_bn": lambda init: model_factory(CNN1D, 40, (6, 4), 3, 10, batchnorm=True, init=init),
    "attn": lambda init: model_factory(Attn, init=init),
    "linear64": lambda init: model_factory(nn.Linear, 30, 20, dtype=torch.float64, init=init),
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("arch", list(FACTORIES))
def test_draw_stacked_is_bit_identical_to_build(arch, scheme, threads, monkeypatch):
    factory = FACTORIES[arch](scheme)
    seeds = [0, 1, 5, 2**40 + 3, 17, 9, 4]
    if threads == 2:  # chunks of 2 members, split over 2 workers (odd sizes on purpose)
        per_member = 8 * sum(p.numel() for p in factory(0).parameters())
        monkeypatch.setattr(stacked_mod, "_STAGE_BYTES", 2 * per_member)
    stacked = draw_stacked(factory, seeds, threads=threads)
    assert stacked is not None
    for i, seed in enumerate(seeds):
        ref = take_snapshot(factory(seed))
        assert stacked.keys() == ref.keys()
        for k, v in ref.items():
            assert stacked[k][i].dtype == v.dtype
            assert torch.equal(stacked[k][i], v), (arch, seed, k)


def test_draw_stacked_falls_back_where_it_cannot_replay_build():
    assert draw_stacked(lambda s: build(MLP, [3, 2], seed=s), [0, 1]) is None
    assert draw_stacked(model_factory(Seq), [0]) is None  # reset_parameters layer
    assert draw_stacked(model_factory(Zoo), [0]) is None  # a constructor buffer
    assert draw_stacked(model_factory(MLP, [3, 2]), []) is not None


def test_population_draws_members_in_place_and_equals_built_members():
    seeds = [4, 0, 9]
    specs = [MemberSpec(seed=s) for s in seeds]
    fast = Population(model_factory(MLP, [6, 5, 3]), specs)
    slow = Population(lambda s: build(MLP, [6, 5, 3], seed=s), specs)  # no model_spec
    for i in range(len(seeds)):
        a, b = fast.state(i), slow.state(i)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    with pytest.raises(ConfigError, match="mask for unknown parameter"):
        Population(model_factory(MLP, [6, 5, 3]), [MemberSpec(seed=0, masks={"x": torch.ones(1)})])


@pytest.mark.slow
def test_draw_stacked_10000_members_of_40_100_100_10_within_3_seconds(monkeypatch):
    """Deliver 5: 10,000 members of MLP 40-100-100-10 in <= 3 s on 2 cores.

    The figure checked is the time on 2 dedicated cores: the larger of the critical path
    (caller's CPU time + the busier worker's) and the process's CPU time over 2 (thread and
    process clocks, user + system), which other processes on a shared machine do not
    inflate the way they inflate the wall clock (also reported)."""
    busy: dict[int, float] = {}
    fill = stacked_mod._Worker.fill

    def timed_fill(self, *args):
        start = time.thread_time()
        fill(self, *args)
        key = threading.get_ident()
        busy[key] = busy.get(key, 0.0) + time.thread_time() - start

    monkeypatch.setattr(stacked_mod._Worker, "fill", timed_fill)
    factory = model_factory(MLP, [40, 100, 100, 10])
    draw_stacked(factory, range(64), threads=2)  # warm-up
    busy.clear()
    main, cpu, wall = time.thread_time(), time.process_time(), time.perf_counter()
    stacked = draw_stacked(factory, range(10_000), threads=2)
    main, cpu = time.thread_time() - main, time.process_time() - cpu
    wall = time.perf_counter() - wall
    assert len(busy) == 2
    two_cores = max(main + max(busy.values()), cpu / 2)  # critical path, or all work on 2
    print(f"10,000 members: {two_cores:.2f} s on 2 cores (wall here {wall:.2f} s)")
    assert stacked["layers.1.weight"].shape == (10_000, 100, 100)
    last = build(MLP, [40, 100, 100, 10], seed=9_999)
    assert torch.equal(stacked["layers.2.bias"][9_999], last.layers[2].bias)
    assert two_cores <= 3.0, f"{two_cores:.2f} s on 2 cores (wall {wall:.2f} s)"
