"""Layer pruning (weightlab.sparsity.layers) and the residual MLP: block removal equals
skipping, SNIP block scores, random removal, unit masks and FLOP counts."""

from __future__ import annotations

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.models.factory import build
from weightlab.models.resmlp import ResMLP
from weightlab.seeding import generator
from weightlab.sparsity.layers import (
    block_scores,
    linear_flops,
    lowest_blocks,
    random_blocks,
    remove_blocks,
    remove_blocks_state,
    unit_masks,
)
from weightlab.sparsity.saliency import snip_scores


def _model(blocks=6, width=16, seed=0):
    return build(ResMLP, 10, width, blocks, 3, seed=seed)


def test_removing_blocks_equals_skipping_them():
    model = _model()
    x = torch.randn(32, 10, generator=generator(1))
    for removed in ([0], [2, 5], [1, 3, 4], []):
        small = remove_blocks(model, removed)
        assert len(small.blocks) == 6 - len(removed)
        assert isinstance(small, ResMLP)
        ref = model(x, skip=set(removed))
        torch.testing.assert_close(small(x), ref, atol=1e-6, rtol=0)
    # fewer parameters and FLOPs: each block costs 2·16·16 weights + 32 biases
    small = remove_blocks(model, [0, 1])
    n = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in small.parameters()) == n - 2 * (2 * 16 * 16 + 32)
    assert linear_flops(small) == linear_flops(model) - 2 * 2 * 16 * 16
    # the original is untouched
    assert len(model.blocks) == 6


def test_remove_blocks_state_loads_into_the_smaller_model():
    model = _model()
    state = model.state_dict()
    small_state = remove_blocks_state(state, [1, 4], 6)
    small = build(ResMLP, 10, 16, 4, 3, seed=99)
    small.load_state_dict(small_state)  # strict: exactly the smaller model's keys
    x = torch.randn(8, 10, generator=generator(2))
    torch.testing.assert_close(small(x), model(x, skip={1, 4}), atol=1e-6, rtol=0)
    assert torch.equal(small_state["blocks.1.fc1.weight"], state["blocks.2.fc1.weight"])
    assert torch.equal(small_state["blocks.3.fc2.bias"], state["blocks.5.fc2.bias"])


def test_block_scores_sum_snip_over_each_blocks_weights():
    model = _model(blocks=4)
    x = torch.randn(20, 10, generator=generator(3))
    y = torch.randint(0, 3, (20,), generator=generator(4))
    scores = block_scores(model, (x, y))
    snip = snip_scores(model, (x, y))
    for b in range(4):
        want = float(snip[f"blocks.{b}.fc1.weight"].sum() + snip[f"blocks.{b}.fc2.weight"].sum())
        assert scores[b] == pytest.approx(want, rel=1e-5)
    # hand check on one block: |w ⊙ ∂L/∂w| by plain autograd
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    w1, w2 = model.blocks[2].fc1.weight, model.blocks[2].fc2.weight
    hand = float(((w1 * w1.grad).abs().sum() + (w2 * w2.grad).abs().sum()).detach())
    assert scores[2] == pytest.approx(hand, rel=1e-5)


def test_lowest_and_random_blocks():
    assert lowest_blocks([3.0, 1.0, 2.0, 0.5, 1.0], 2) == [1, 3]
    assert lowest_blocks([1.0, 1.0, 1.0], 2) == [0, 1]  # ties: earlier block goes
    a = random_blocks(8, 4, generator(0))
    assert a == random_blocks(8, 4, generator(0)) and len(set(a)) == 4 and a == sorted(a)
    draws = {tuple(random_blocks(8, 4, generator(s))) for s in range(20)}
    assert len(draws) > 5
    with pytest.raises(ConfigError, match="at least one block"):
        lowest_blocks([1.0, 2.0], 2)
    with pytest.raises(ConfigError, match="cannot remove"):
        random_blocks(3, 3, generator(0))
    with pytest.raises(ConfigError, match="out of range"):
        remove_blocks(_model(), [6])


def test_unit_masks_keep_the_largest_l1_units_per_block():
    model = _model(blocks=2, width=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["blocks.0.fc1.weight"] = torch.tensor(
        [[1.0, 0, 0, 0], [0, 5, 0, 0], [-3, 0, 0, 0], [0, 0, 0, 0.5]]
    )
    masks = unit_masks(state, 2, 0.5)  # keep floor(4 * 0.5) = 2 per block: units 1 and 2
    keep = torch.tensor([False, True, True, False])
    assert torch.equal(masks["blocks.0.fc1.bias"], keep)
    assert torch.equal(masks["blocks.0.fc1.weight"], keep[:, None].expand(4, 4))
    assert torch.equal(masks["blocks.0.fc2.weight"], keep[None, :].expand(4, 4))
    assert int(masks["blocks.1.fc1.bias"].sum()) == 2
    # FLOP-matched with removing half the blocks
    assert linear_flops(model, masks) == linear_flops(remove_blocks(model, [0]))
    assert int(unit_masks(state, 2, 0.3)["blocks.0.fc1.bias"].sum()) == 2  # floor(4·0.7)
    with pytest.raises(ConfigError, match="keeps none"):
        unit_masks(state, 2, 0.9)


def test_layer_pruning_needs_blocks():
    with pytest.raises(ConfigError, match="no 'blocks'"):
        remove_blocks(torch.nn.Linear(2, 2), [0])
