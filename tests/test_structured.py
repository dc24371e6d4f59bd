"""Structured pruning into a smaller model: equivalence to zeroing the removed units,
⌊n·(1 - r)⌋ keep counts, residual ties, parameter / FLOP counts and the errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from weightlab.core import apply_masks
from weightlab.errors import ConfigError
from weightlab.models import CNN1D, MLP, build
from weightlab.models.convnets import ResidualCNN, SmallCNN
from weightlab.seeding import generator
from weightlab.sparsity.structured import (
    count_flops,
    count_parameters,
    kept_units,
    l1_unit_scores,
    prune_structured,
    structured_report,
    unit_groups,
    zeroed_units,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm affine parameters and running statistics."""
    g = generator(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


CASES = {
    "mlp": (lambda: build(MLP, [40, 64, 32, 10], seed=1), (6, 40)),
    "mlp_tanh": (lambda: build(MLP, [40, 24, 24, 10], activation="tanh", seed=1), (6, 40)),
    "cnn1d": (lambda: build(CNN1D, seed=2), (6, 40)),
    "cnn1d_bn": (lambda: build(CNN1D, channels=(16, 24), batchnorm=True, seed=3), (6, 40)),
    "small_cnn": (lambda: build(SmallCNN, seed=4), (4, 3, 16, 16)),
    "residual_cnn": (lambda: build(ResidualCNN, width=16, blocks=3, seed=5), (3, 3, 8, 8)),
    "sequential": (
        lambda: build(
            nn.Sequential,
            nn.Linear(12, 20),
            nn.BatchNorm1d(20),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(20, 9),
            nn.GELU(),
            nn.Linear(9, 3),
            seed=6,
        ),
        (5, 12),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_pruned_model_equals_original_with_removed_units_zeroed(name, ratio):
    make, shape = CASES[name]
    model = make()
    _randomize_norms(model)
    model.eval()
    x = torch.randn(*shape, generator=generator(7))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = prune_structured(model, ratio)
    small = res.model.eval()
    assert type(small) is type(model)
    with torch.no_grad(), zeroed_units(model, res):
        ref = model(x)
    with torch.no_grad():
        out = small(x)
        plain = model(x)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    assert not torch.allclose(out, plain, atol=1e-4)  # pruning did change something
    # the original is untouched, the result has no masks and fewer parameters and FLOPs
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(hasattr(m, "parametrizations") for m in small.modules())
    assert count_parameters(small) < count_parameters(model)


def test_keep_count_is_floor_and_highest_l1_scores_survive():
    scores = torch.tensor([5.0, 1.0, 4.0, 2.0, 9.0, 3.0, 0.5, 7.0, 6.0, 8.0])
    # ⌊10 · 0.75⌋ = 7: the three lowest (0.5, 1, 2 at 6, 1, 3) go
    assert kept_units(scores, 0.25).tolist() == [0, 2, 4, 5, 7, 8, 9]
    assert kept_units(scores, 0.5).tolist() == [0, 4, 7, 8, 9]
    assert kept_units(scores, 0.0).tolist() == list(range(10))
    assert kept_units(scores, 0.85).tolist() == [4]  # ⌊1.5⌋ = 1
    # hand-computed MLP widths: 40-64-33-10 at 0.3 -> ⌊44.8⌋ = 44, ⌊23.1⌋ = 23
    res = prune_structured(build(MLP, [40, 64, 33, 10], seed=0), 0.3)
    assert res.model.widths == [40, 44, 23, 10]
    assert [m.out_features for m in res.model.layers] == [44, 23, 10]


def test_scores_are_row_l1_norms_and_kept_rows_are_copied():
    model = build(MLP, [3, 4, 2], seed=0)
    with torch.no_grad():
        model.layers[0].weight.copy_(
            torch.tensor([[1.0, -1.0, 0.0], [0.1, 0.1, -0.1], [-3.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
        )
    scores = l1_unit_scores(model)["layers.0"]
    torch.testing.assert_close(scores, torch.tensor([2.0, 0.3, 3.0, 1.5]))
    res = prune_structured(model, 0.5)
    assert res.kept["layers.0"].tolist() == [0, 2]
    torch.testing.assert_close(res.model.layers[0].weight, model.layers[0].weight[[0, 2]])
    torch.testing.assert_close(res.model.layers[1].weight, model.layers[1].weight[:, [0, 2]])
    torch.testing.assert_close(res.model.layers[1].bias, model.layers[1].bias)


def test_residual_cnn_prunes_only_block_internal_channels():
    model = build(ResidualCNN, width=16, blocks=2, seed=0)
    assert [g.producer for g in unit_groups(model)] == ["blocks.0.conv1", "blocks.1.conv1"]
    res = prune_structured(model, 0.5)
    small = res.model
    assert small.inner == [8, 8]
    assert small.stem.out_channels == 16
    for block in small.blocks:
        assert (block.conv1.in_channels, block.conv1.out_channels) == (16, 8)
        assert (block.conv2.in_channels, block.conv2.out_channels) == (8, 16)
        assert block.bn1.num_features == 8 and block.bn2.num_features == 16
    assert small.classifier.in_features == 16


def test_cnn1d_classifier_columns_follow_the_flattened_channels():
    model = build(CNN1D, channels=(8, 6), seed=0)  # length 40 -> 20 -> 10 positions
    res = prune_structured(model, 0.5)
    kept = res.kept["features.2"]
    cols = (kept[:, None] * 10 + torch.arange(10)).flatten()
    torch.testing.assert_close(res.model.classifier.weight, model.classifier.weight[:, cols])
    assert res.model.classifier.in_features == 30


def test_counts_match_hand_computation():
    model = build(MLP, [40, 64, 32, 10], seed=0)
    small = prune_structured(model, 0.5).model  # 40-32-16-10
    assert count_parameters(small) == 40 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert count_flops(small, torch.zeros(1, 40)) == 2 * (40 * 32 + 32 * 16 + 16 * 10)
    rep = structured_report(model, small, torch.zeros(1, 40))
    assert rep["flops_before"] == 2 * (40 * 64 + 64 * 32 + 32 * 10)
    assert rep["params_ratio"] == rep["params_after"] / rep["params_before"] < 0.5


def test_pruned_model_trains():
    model = build(SmallCNN, seed=0)
    small = prune_structured(model, 0.5).model.train()
    loss = small(torch.randn(4, 3, 8, 8)).square().mean()
    loss.backward()
    assert all(p.grad is not None for p in small.parameters())


def test_removing_every_unit_is_an_error():
    model = build(MLP, [4, 3, 2], seed=0)
    with pytest.raises(ConfigError, match=r"would remove all 3 units of 'layers.0'") as e:
        prune_structured(model, 0.7)  # ⌊3 · 0.3⌋ = 0
    assert "\n" not in str(e.value)
    for bad in (1.0, -0.1, "x"):
        with pytest.raises(ConfigError, match="ratio must"):
            prune_structured(model, bad)


def test_unsupported_module_types_are_named():
    seq = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ConfigError, match="LayerNorm") as e:
        prune_structured(seq, 0.5)
    assert "\n" not in str(e.value)

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 8)

    with pytest.raises(ConfigError, match="model type Custom"):
        prune_structured(Custom(), 0.5)
    bn_after_act = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 2))
    with pytest.raises(ConfigError, match="BatchNorm only right after"):
        prune_structured(bn_after_act, 0.5)


def test_masked_model_must_be_merged_first():
    model = build(MLP, [4, 6, 2], seed=0)
    apply_masks(model, {"layers.0.weight": torch.ones(6, 4, dtype=torch.bool)})
    with pytest.raises(ConfigError, match="merge"):
        prune_structured(model, 0.5)
