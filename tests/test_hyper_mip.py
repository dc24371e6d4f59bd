"""MIP hypernetworks (Ortiz et al. 2023): the constant-norm γ encoding, HyperLight's
initialization, θ(γ) = θ₀ + head(h), the magnitude proportionality of the default
hypernetwork, the functional target, the mixed loss and the per-step γ stream in the loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.hyper.mip import (
    GammaStream,
    HyperTarget,
    MIPHypernet,
    default_hypernet,
    encode_gamma,
    magnitude_ratio,
    mip_hypernet,
    mixed_loss,
)
from weightlab.models.factory import build
from weightlab.models.mlp import MLP
from weightlab.train.callbacks import LossRecorder
from weightlab.train.config import OptimConfig, TrainConfig
from weightlab.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _target(seed: int = 0) -> nn.Module:
    return build(MLP, [40, 64, 10], seed=seed)


def test_encoding_has_constant_norm_and_known_values():
    g = torch.tensor([[0.0], [0.1], [0.5], [1.0]])
    e = encode_gamma(g)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(e[0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(e[2], torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))
    torch.testing.assert_close(e[3], torch.tensor([math.cos(math.pi / 2), 1.0]))
    two = encode_gamma(torch.tensor([0.2, 0.7]))
    assert two.shape == (4,) and abs(float(two.norm()) - math.sqrt(2)) < 1e-6
    assert torch.equal(encode_gamma(g, "raw"), g)
    with pytest.raises(ConfigError, match="encoding"):
        encode_gamma(g, "fourier")


def test_mip_output_is_theta0_plus_head_with_zero_biases():
    t = _target()
    h = mip_hypernet(t, seed=3)
    assert h.head.in_features == 64 and h.head.out_features == 40 * 64 + 64 + 64 * 10 + 10
    base = dict(
        zip(
            h.shapes,
            torch.split(h.head.bias.detach(), [math.prod(s) for s in h.shapes.values()]),
            strict=True,
        )
    )
    torch.testing.assert_close(base["layers.0.weight"].view(64, 40), t.layers[0].weight)
    torch.testing.assert_close(base["layers.1.weight"].view(10, 64), t.layers[1].weight)
    assert not base["layers.0.bias"].any() and not base["layers.1.bias"].any()
    # θ(γ) = θ₀ + W_head h(γ)
    g = torch.tensor([0.3])
    hidden = encode_gamma(g)
    for layer in h.layers:
        hidden = torch.relu(layer(hidden))
    torch.testing.assert_close(h(g), h.head.bias + h.head.weight @ hidden)
    params = h.params(g)
    assert params["layers.0.weight"].shape == (64, 40) and params["layers.1.bias"].shape == (10,)
    # the default control: zero output bias, raw input of width 1
    d = default_hypernet(t, seed=3)
    assert not d.head.bias.any() and d.layers[0].in_features == 1


def test_hyperlight_initialization_is_kaiming_normal_fan_out():
    t = _target()
    big = MIPHypernet(t, hidden=(512, 512), activation="tanh", seed=1)
    w1 = big.layers[1].weight.detach()  # (512, 512): std = gain / sqrt(fan_out)
    assert abs(float(w1.std()) - (5 / 3) / math.sqrt(512)) < 0.02 * (5 / 3) / math.sqrt(512)
    head = big.head.weight.detach()  # gain 1, fan_out = P
    p = head.shape[0]
    assert abs(float(head.std()) - 1 / math.sqrt(p)) < 0.01 / math.sqrt(p)
    assert all(not layer.bias.any() for layer in big.layers)
    relu = MIPHypernet(t, hidden=(512, 512), activation="relu", seed=1)
    assert abs(float(relu.layers[1].weight.detach().std()) - math.sqrt(2 / 512)) < 0.02 * math.sqrt(
        2 / 512
    )
    # seeded, and it leaves the global RNG alone
    state = torch.random.get_rng_state()
    a, b = mip_hypernet(t, seed=5), mip_hypernet(t, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.head.weight, mip_hypernet(t, seed=6).head.weight)


def test_magnitude_proportionality_by_construction():
    t = _target()
    relu = default_hypernet(t, activation="relu", seed=2)
    # zero biases and a positively homogeneous activation: θ(cγ) = c·θ(γ) exactly
    torch.testing.assert_close(relu(torch.tensor([0.4])), 4 * relu(torch.tensor([0.1])))
    assert abs(magnitude_ratio(relu) - 10.0) < 1e-4
    tanh = default_hypernet(t, activation="tanh", seed=2)
    assert 1.5 < magnitude_ratio(tanh) < 10.0
    for act in ("relu", "tanh"):
        assert abs(magnitude_ratio(mip_hypernet(t, activation=act, seed=2)) - 1.0) < 0.1


def test_target_is_applied_functionally_and_mixed_loss_matches_hand_computation():
    t = _target(1)
    perm = torch.tensor([3, 0, 1, 2, 5, 4, 9, 6, 7, 8])
    model = HyperTarget(mip_hypernet(t, seed=0), t, perm)
    x = torch.randn(8, 40, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 10
    model.set_gamma(0.25)
    p = model.hypernet.params(model.gamma)
    ref = F.linear(
        torch.relu(F.linear(x, p["layers.0.weight"], p["layers.0.bias"])),
        p["layers.1.weight"],
        p["layers.1.bias"],
    )
    pred = model(x)
    torch.testing.assert_close(pred, ref)
    want = 0.75 * F.cross_entropy(ref, y, reduction="none") + 0.25 * F.cross_entropy(
        ref, perm[y], reduction="none"
    )
    torch.testing.assert_close(model.loss(pred, y), want)
    torch.testing.assert_close(mixed_loss(pred, y, torch.tensor(0.25), perm), want)
    # the target's own weights are frozen; only the hypernetwork trains
    assert all(not q.requires_grad for q in t.parameters())
    model.loss(model(x), y).mean().backward()
    assert model.hypernet.head.weight.grad is not None and t.layers[0].weight.grad is None
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        model.set_gamma(1.5)


def test_raw_first_layer_padded_with_zero_column_changes_nothing():
    """The default's raw input of width 1 equals a width-2 input [γ, 0] whose second column
    is anything: the column multiplies zero."""
    t = _target()
    d = default_hypernet(t, seed=4)
    w = d.layers[0].weight.detach()
    padded = torch.cat([w, torch.randn_like(w)], dim=1)
    g = torch.tensor([0.6])
    manual = torch.relu(F.linear(torch.tensor([0.6, 0.0]), padded))
    torch.testing.assert_close(manual, torch.relu(d.layers[0](g)))


def test_gamma_stream_feeds_one_gamma_per_step_inside_the_loop():
    t = _target(2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 40, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    data = TaskData(
        "toy", Split(x, y), Split(x[:8], y[:8]), Split(x[:8], y[:8]), 10, "classification"
    )
    perm = torch.roll(torch.arange(10), 1)
    gammas = torch.tensor([0.1, 0.9, 0.5, 0.3])
    model = HyperTarget(mip_hypernet(t, seed=1), t, perm)
    seen = []

    def spy(m, ctx):
        seen.append(float(m.gamma[0]))

    rec = LossRecorder()
    cfg = TrainConfig(1, 16, 4, OptimConfig("adam", lr=1e-3), loss=model.loss)
    order = torch.arange(64).view(4, 16)
    # the spy runs before the stream: it sees the γ each update was computed with
    train(model, data, cfg, 0, order=order, callbacks=[spy, GammaStream(model, gammas), rec])
    torch.testing.assert_close(torch.tensor(seen), gammas)
    # step 1's recorded loss is L_{0.1} of the initial hypernetwork on batch 0
    fresh = HyperTarget(mip_hypernet(t, seed=1), t, perm)
    fresh.set_gamma(0.1)
    with torch.no_grad():
        first = float(fresh.loss(fresh(x[:16]), y[:16]).mean())
    assert abs(rec.losses[0] - first) < 1e-5


def test_bad_arguments_are_refused():
    t = _target()
    with pytest.raises(ConfigError, match="activation"):
        MIPHypernet(t, activation="gelu")
    with pytest.raises(ConfigError, match="encoding"):
        MIPHypernet(t, encoding="fourier")
    with pytest.raises(ConfigError, match="hidden"):
        MIPHypernet(t, hidden=())
