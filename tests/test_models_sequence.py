"""Sequence models for self-pretraining: shapes, heads, backbone transfer, the hand-written GRU
against torch.nn.GRU, and populations (vmap) equal to the single-model loop."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from weightlab.core.snapshots import take_snapshot
from weightlab.errors import ConfigError
from weightlab.models.factory import build, model_factory
from weightlab.models.sequence import (
    ARCHITECTURES,
    SeqCNN,
    SeqGRU,
    SeqTransformer,
    backbone_state,
    load_backbone,
    parameter_count,
    split_tokens,
)
from weightlab.population import MemberSpec, Population, build_member
from weightlab.train import OptimConfig, TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {
    "transformer": {"d": 8, "heads": 2},
    "cnn": {"d": 8, "layers": 2},
    "gru": {"d": 8},
}


def _x(b=5, length=12, seed=0):
    return torch.randn(b, length, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_heads_shapes_and_shared_backbone_names(arch):
    cls = ARCHITECTURES[arch]
    clf = build(cls, 12, 3, "classify", seed=0, **SMALL[arch])
    den = build(cls, 12, 3, "denoise", seed=0, **SMALL[arch])
    x = _x()
    assert clf(x).shape == (5, 3)
    assert den(x).shape == (5, 12)
    assert clf.features(x).shape == (5, 12, 8)
    b_clf, b_den = backbone_state(clf.state_dict()), backbone_state(den.state_dict())
    assert b_clf.keys() == b_den.keys() and b_clf
    assert all(b_clf[k].shape == b_den[k].shape for k in b_clf)
    assert all(torch.equal(b_clf[k], b_den[k]) for k in b_clf)  # backbone drawn first
    assert torch.equal(clf.features(x), den.features(x))
    other = build(cls, 12, 3, "denoise", seed=1, **SMALL[arch])
    assert not torch.equal(other.features(x), clf.features(x))
    load_backbone(clf, backbone_state(other.state_dict()))
    assert torch.equal(clf.features(x), other.features(x))
    assert set(clf.state_dict()) - set(b_clf) == {"head.weight", "head.bias"}


def test_classify_head_is_the_mean_over_tokens():
    m = build(SeqCNN, 12, 3, seed=1, **SMALL["cnn"])
    x = _x()
    want = F.linear(m.features(x).mean(1), m.head.weight, m.head.bias)
    assert torch.allclose(m(x), want, atol=1e-6)


def test_mask_channel_zeroes_values_and_plain_input_means_no_mask():
    x = _x()
    v, m = split_tokens(x, 12)
    assert torch.equal(v, x) and not m.any()
    mask = torch.zeros_like(x)
    mask[:, 3] = 1
    v, m = split_tokens(torch.stack((x, mask), 1), 12)
    assert torch.all(v[:, 3] == 0) and torch.equal(v[:, 4:], x[:, 4:]) and torch.equal(m, mask)
    model = build(SeqTransformer, 12, 3, "denoise", seed=0, **SMALL["transformer"])
    # a masked token's value never reaches the model
    x2 = x.clone()
    x2[:, 3] += 5.0
    out1 = model(torch.stack((x, mask), 1))
    out2 = model(torch.stack((x2, mask), 1))
    assert torch.equal(out1, out2)


def test_cnn_is_translation_equivariant_away_from_the_edges_and_keeps_length():
    m = build(SeqCNN, 40, 3, seed=0, d=4, layers=2, kernel=3, dilate=False)
    x = torch.zeros(1, 40)
    x[0, 15] = 1.0
    y = torch.zeros(1, 40)
    y[0, 20] = 1.0
    fx, fy = m.features(x), m.features(y)
    assert fx.shape == (1, 40, 4)
    assert torch.allclose(fx[0, 10:25], fy[0, 15:30], atol=1e-6)


def test_transformer_attention_matches_multihead_attention():
    """The explicit attention equals nn.MultiheadAttention with the same projections."""
    torch.manual_seed(0)
    m = build(SeqTransformer, 12, 3, seed=0, d=8, heads=2).double()
    block = m.backbone.blocks[0]
    mha = nn.MultiheadAttention(8, 2, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_weight.copy_(block.qkv.weight)
        mha.in_proj_bias.copy_(block.qkv.bias)
        mha.out_proj.weight.copy_(block.proj.weight)
        mha.out_proj.bias.copy_(block.proj.bias)
    h = torch.randn(4, 12, 8, dtype=torch.float64)
    want, _ = mha(h, h, h, need_weights=False)
    assert torch.allclose(block.attention(h), want, atol=1e-12)


def test_gru_equals_torch_gru_float64():
    hidden, length = 16, 40
    m = build(SeqGRU, length, 3, seed=3, d=hidden).double()
    ref = nn.GRU(2, hidden, batch_first=True).double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(m.backbone.ih.weight)
        ref.bias_ih_l0.copy_(m.backbone.ih.bias)
        ref.weight_hh_l0.copy_(m.backbone.hh.weight)
        ref.bias_hh_l0.copy_(m.backbone.hh.bias)
    x = torch.randn(6, length, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mask = (torch.rand(6, length, generator=torch.Generator().manual_seed(2)) < 0.3).double()
    inp = torch.stack((x, mask), 1)
    v, mk = split_tokens(inp, length)
    want, _ = ref(torch.stack((v, mk), -1))
    got = m.features(inp)
    assert (got - want).abs().max() < 1e-6
    assert torch.allclose(got, want, atol=1e-12)


def test_gru_reset_before_is_cho_et_al_eq8():
    """reset='before': h~ = tanh(W x + U (r * h)), by hand for two steps."""
    m = build(SeqGRU, 2, 3, seed=4, d=3, reset="before").double()
    ih, hh = m.backbone.ih, m.backbone.hh
    x = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    h = torch.zeros(1, 3, dtype=torch.float64)
    outs = []
    for t in range(2):
        xt = torch.tensor([[x[0, t], 0.0]], dtype=torch.float64)
        gi = F.linear(xt, ih.weight, ih.bias)
        w_r, w_z, w_n = hh.weight.chunk(3)
        b_r, b_z, b_n = hh.bias.chunk(3)
        r = torch.sigmoid(gi[:, :3] + F.linear(h, w_r, b_r))
        z = torch.sigmoid(gi[:, 3:6] + F.linear(h, w_z, b_z))
        n = torch.tanh(gi[:, 6:] + F.linear(r * h, w_n, b_n))
        h = z * h + (1 - z) * n
        outs.append(h)
    assert torch.allclose(m.features(x), torch.stack(outs, 1), atol=1e-12)
    after = build(SeqGRU, 2, 3, seed=4, d=3).double()
    assert not torch.allclose(after.features(x), m.features(x))  # the forms differ


def test_parameter_counts_roughly_matched_at_recipe_sizes():
    counts = {
        "transformer": parameter_count(SeqTransformer(40, 10), backbone_only=True),
        "cnn": parameter_count(SeqCNN(40, 10, d=36), backbone_only=True),
        "gru": parameter_count(SeqGRU(40, 10), backbone_only=True),
    }
    assert counts == {"transformer": 18528, "cnn": 19944, "gru": 20160}
    assert max(counts.values()) / min(counts.values()) < 1.1


def test_load_backbone_refuses_another_architecture_or_width():
    clf = SeqCNN(12, 3, d=8, layers=2)
    with pytest.raises(ConfigError, match="missing"):
        load_backbone(clf, backbone_state(SeqGRU(12, 3, "denoise", d=8).state_dict()))
    with pytest.raises(ConfigError, match="shape"):
        load_backbone(clf, backbone_state(SeqCNN(12, 3, "denoise", d=6, layers=2).state_dict()))


@pytest.mark.parametrize(
    "make",
    [
        lambda: SeqCNN(12, 3, head="pool"),
        lambda: SeqTransformer(12, 3, d=10, heads=4),
        lambda: SeqCNN(12, 3, kernel=4),
        lambda: SeqGRU(12, 3, reset="middle"),
        lambda: SeqGRU(0, 3),
    ],
)
def test_bad_configs_are_one_line_config_errors(make):
    with pytest.raises(ConfigError) as e:
        make()
    assert "\n" not in str(e.value)


def test_wrong_input_length_is_a_config_error():
    with pytest.raises(ConfigError, match="reads inputs"):
        SeqCNN(12, 3, d=4, layers=1)(torch.zeros(2, 10))


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_population_vmap_equals_loop(arch, mnist1d_slice, caplog):
    """Seeds of every architecture train as one population on the vmap path (not member by
    member), equal to the single-model loop per member in float64."""
    data = mnist1d_slice
    factory = model_factory(ARCHITECTURES[arch], 40, 10, **SMALL[arch])
    cfg = TrainConfig(1, 64, 0, OptimConfig("adam", lr=1e-2))
    specs = [MemberSpec(seed=s, data_seed=s) for s in range(2)]
    pop = Population(factory, specs, dtype=torch.float64)
    with caplog.at_level(logging.INFO, logger="weightlab"):
        results = pop.fit(data, cfg)
    assert "torch.func vmap path" in caplog.text and "sequential" not in caplog.text
    for i, spec in enumerate(specs):
        model = build_member(factory, spec)
        ref = train(model, data, cfg, data_seed=spec.data_seed, seed=spec.seed, dtype=torch.float64)
        want = take_snapshot(model)
        got = pop.state(i)
        for k in want:
            assert torch.allclose(got[k].double(), want[k], rtol=1e-6, atol=1e-8), k
        assert math.isclose(results[i].final.val_loss, ref.final.val_loss, rel_tol=1e-6)
