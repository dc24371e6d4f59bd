"""NeuMeta's weight field and smoothing: Fourier features by hand, coordinates, the sampled
state dict's shapes and scaling, the width range error, the TSP heuristic against brute force,
function preservation of smoothing (1e-6), and a short training run that lowers the loss."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.hyper.neumeta import (
    FEATURE_SIZE,
    ImplicitWeightField,
    fourier_features,
    path_length,
    shortest_path_order,
    smooth_mlp,
    train_field,
    train_fields,
)
from weightlab.models.factory import build
from weightlab.models.mlp import MLP
from weightlab.seeding import generator

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fourier_features_by_hand():
    c = torch.tensor([[0.25, 0.5, 1.0, 0.0]], dtype=torch.float64)
    f = fourier_features(c)
    assert f.shape == (1, FEATURE_SIZE) == (1, 68)
    assert torch.equal(f[0, :4], c[0])
    # sin block: entry (coordinate a, frequency k) at 4 + 8a + k
    assert f[0, 4 + 0 * 8 + 0] == pytest.approx(math.sin(math.pi * 0.25))
    assert f[0, 4 + 1 * 8 + 2] == pytest.approx(math.sin(4 * math.pi * 0.5), abs=1e-12)
    assert f[0, 36 + 0 * 8 + 1] == pytest.approx(math.cos(2 * math.pi * 0.25), abs=1e-12)
    assert f[0, 36 + 3 * 8 + 7] == pytest.approx(1.0)


def test_coordinates_and_noise():
    f = ImplicitWeightField(40, 10, [8, 16, 32], seed=0)
    c = f.coordinates(3, 4, bias=False)
    assert c.shape == (12, 4)
    assert torch.allclose(c[5], torch.tensor([1 / 3, 1 / 4, 3 / 32, 4 / 32]))
    b = f.coordinates(3, 4, bias=True)
    assert b.shape == (3, 4) and torch.all(b[:, 1] == 0)
    noisy = f.coordinates(3, 4, bias=False, noise=generator(1))
    shift_i = (noisy[:, 0] - c[:, 0]) * 3
    shift_j = (noisy[:, 1] - c[:, 1]) * 4
    assert shift_i.abs().max() <= 0.5 and shift_j.abs().max() <= 0.5
    assert shift_i.abs().max() > 0 and torch.equal(noisy[:, 2:], c[:, 2:])


def test_sample_shapes_scaling_and_range():
    f = ImplicitWeightField(40, 10, range(8, 33, 4), seed=3)
    assert f.width_range == (8, 32) and f.w_ref == 32
    with torch.no_grad():
        s = f.sample(11)
    assert {k: tuple(v.shape) for k, v in s.items()} == {
        "layers.0.weight": (11, 40),
        "layers.0.bias": (11,),
        "layers.1.weight": (11, 11),
        "layers.1.bias": (11,),
        "layers.2.weight": (10, 11),
        "layers.2.bias": (10,),
    }
    assert sum(v.numel() for v in s.values()) == 703  # 25% of the 2,698 of width 32
    assert sum(v.numel() for v in f.sample(32).values()) == 2698
    # weight = output / sqrt(fan_in), bias = output
    with torch.no_grad():
        c = f.coordinates(11, 40, False)
        from weightlab.hyper.neumeta import fourier_features as ff

        raw = f.fields["0_weight"](ff(c)).reshape(11, 40)
        assert torch.allclose(s["layers.0.weight"], raw / math.sqrt(40))
        rawb = f.fields["0_bias"](ff(f.coordinates(11, 40, True))).reshape(11)
        assert torch.allclose(s["layers.0.bias"], rawb)
    # the same seed gives the same field
    g = ImplicitWeightField(40, 10, range(8, 33, 4), seed=3)
    with torch.no_grad():
        assert torch.equal(g.sample(11)["layers.1.weight"], s["layers.1.weight"])
    for bad in (7, 33, 0):
        with pytest.raises(ConfigError, match=r"outside the weight field's training range 8\.\.32"):
            f.sample(bad)


def test_shortest_path_matches_brute_force_on_small_sets():
    g = generator(5)
    for trial in range(4):
        pts = torch.randn(7, 3, generator=g, dtype=torch.float64)
        order = shortest_path_order(pts)
        assert order[0] == 0 and sorted(order) == list(range(7))
        d = torch.cdist(pts, pts)
        best = min(path_length(d, [0, *perm]) for perm in itertools.permutations(range(1, 7)))
        got = path_length(d, order)
        assert got <= 1.1 * best + 1e-12, (trial, got, best)
        # 2-opt local optimum: no reversal of order[i..j] (i >= 1) shortens it
        for i in range(1, 7):
            for j in range(i + 1, 7):
                new = order[:i] + order[i : j + 1][::-1] + order[j + 1 :]
                assert path_length(d, new) >= got - 1e-9


def test_points_on_a_line_are_sorted():
    x = torch.tensor([0.0, 5.0, 1.0, 3.0, 2.0, 4.0], dtype=torch.float64)[:, None]
    assert shortest_path_order(x) == [0, 2, 4, 3, 5, 1]


def test_smoothing_preserves_the_function_and_shortens_paths():
    net = build(MLP, [40, 32, 32, 10], seed=1)
    state = net.state_dict()
    smooth, orders = smooth_mlp(state)
    x = torch.randn(64, 40, generator=generator(2))
    with torch.no_grad():
        a = net(x)
        b = torch.func.functional_call(net, smooth, (x,))
    assert (a - b).abs().max() <= 1e-6
    assert len(orders) == 2 and all(sorted(o) == list(range(32)) for o in orders)
    assert orders[0] != list(range(32))
    # the smoothed order is shorter than the identity order over the same unit vectors
    w, b0, nxt = state["layers.0.weight"], state["layers.0.bias"], state["layers.1.weight"]
    d = torch.cdist(*(2 * [torch.cat([w, b0[:, None], nxt.T], 1).double()]))
    assert path_length(d, orders[0]) < 0.9 * path_length(d, list(range(32)))
    assert torch.equal(state["layers.0.weight"], net.layers[0].weight)  # input untouched


def test_train_field_lowers_the_loss_and_is_seeded(mnist1d_slice):
    data = mnist1d_slice
    ref = smooth_mlp(build(MLP, [40, 12, 12, 10], seed=0).state_dict())[0]

    def run():
        f = ImplicitWeightField(40, 10, [8, 12], hidden=16, seed=0)
        return f, train_field(f, data, ref, steps=60, batch_size=32, lr=3e-3, seed=1)

    f, losses = run()
    assert len(losses) == 60
    assert sum(losses[-10:]) < sum(losses[:10])
    assert run()[1] == losses
    with pytest.raises(ConfigError, match="reference state dict has shapes"):
        train_field(
            f, data, smooth_mlp(build(MLP, [40, 8, 8, 10], seed=0).state_dict())[0], steps=1
        )


def test_first_loss_is_the_sampled_nets_cross_entropy(mnist1d_slice):
    """Step 0's loss is the cross-entropy of ``field.sample(8, noise)`` on the first batch,
    with the batch order and the noise drawn from the seeded generator in that order."""
    from weightlab.seeding import derive_seed

    data = mnist1d_slice
    ref = build(MLP, [40, 12, 12, 10], seed=0).state_dict()
    f = ImplicitWeightField(40, 10, [8, 12], hidden=16, seed=4)
    g = generator(derive_seed("neumeta-field", 7))
    idx = torch.randperm(len(data.train), generator=g)[:32]
    with torch.no_grad():
        with torch.device("meta"):
            net = MLP([40, 8, 8, 10])
        logits = torch.func.functional_call(net, f.sample(8, noise=g), (data.train.x[idx],))
        want = float(torch.nn.functional.cross_entropy(logits, data.train.y[idx]))
    losses = train_field(f, data, ref, steps=1, batch_size=32, seed=7)
    assert losses[0] == pytest.approx(want, rel=1e-5)


def test_stacked_fields_equal_separate_training(mnist1d_slice):
    data = mnist1d_slice
    refs = [build(MLP, [40, 12, 12, 10], seed=s).state_dict() for s in (0, 1)]

    def fields():
        return [ImplicitWeightField(40, 10, [8, 12], hidden=16, seed=s) for s in (0, 1)]

    kw = {"steps": 12, "batch_size": 32, "lr": 3e-3}
    a = fields()
    stacked = train_fields(a, data, refs, noise=[True, False], seeds=[5, 6], **kw)
    b = fields()
    alone = [
        train_field(b[0], data, refs[0], noise=True, seed=5, **kw),
        train_field(b[1], data, refs[1], noise=False, seed=6, **kw),
    ]
    for x, y in zip(stacked, alone, strict=True):
        assert x == pytest.approx(y, rel=1e-4)
    # float rounding differs (batched vs single matmuls); Adam divides tiny gradients by
    # their own scale, so parameters agree to a fraction of one step (lr = 3e-3), not 1e-6
    for fa, fb in zip(a, b, strict=True):
        for pa, pb in zip(fa.parameters(), fb.parameters(), strict=True):
            assert (pa - pb).abs().max() < 1e-3, (pa - pb).abs().max()
    # the width-12 steps (odd steps) include the reconstruction term: larger losses
    assert all(stacked[0][t] > stacked[0][t - 1] for t in (1, 3))
