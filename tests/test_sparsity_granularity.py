"""Granularity: hand-computed masks for unstructured, N:M, block and channel pruning."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.sparsity.granularity import (
    block_mask,
    channel_mask,
    granular_mask,
    granular_masks,
    nm_mask,
    unstructured_mask,
)


def test_unstructured_exact_count_and_ties_to_lower_index():
    score = torch.tensor([[3.0, 1.0, 2.0], [2.0, 0.5, 2.0]])
    # density 0.5 of 6 -> 3 kept: 3.0, then the three 2.0s tie -> the two lowest indices
    mask = unstructured_mask(score, 0.5)
    assert mask.tolist() == [[True, False, True], [True, False, False]]
    # round-half-up on the printed decimal: 0.25 * 6 = 1.5 -> 2
    assert int(unstructured_mask(score, 0.25).sum()) == 2
    assert int(unstructured_mask(score, Fraction(1, 3)).sum()) == 2


def test_nm_two_of_four_per_group_along_inputs():
    score = torch.tensor(
        [
            [0.1, 0.9, 0.5, 0.3, 4.0, 3.0, 2.0, 1.0],
            [1.0, 1.0, 1.0, 1.0, -1.0, 0.0, 5.0, -2.0],
        ]
    )
    mask = nm_mask(score, 2, 4)
    expected = [
        [False, True, True, False, True, True, False, False],
        [True, True, False, False, False, True, True, False],  # tie: the earlier two
    ]
    assert mask.tolist() == expected
    groups = mask.reshape(2, 2, 4).sum(-1)
    assert torch.all(groups == 2)


def test_nm_on_conv_groups_the_flattened_input_and_kernel():
    g = torch.Generator().manual_seed(0)
    score = torch.rand(3, 2, 2, 2, generator=g)  # (out, in, kh, kw): rows of 8
    mask = nm_mask(score, 1, 4)
    assert mask.shape == score.shape
    rows = mask.reshape(3, 2, 4)
    assert torch.all(rows.sum(-1) == 1)
    top = score.reshape(3, 2, 4).argmax(-1)
    assert torch.equal(rows.float().argmax(-1), top)


def test_block_keeps_best_blocks_by_sum_and_mean():
    score = torch.tensor(
        [
            [1.0, 1.0, 0.0, 0.0, 5.0, 0.0],
            [1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 2.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 2.0, 0.0, 0.0],
        ]
    )
    # 2x2 blocks: sums [[4, 0, 5], [0, 8, 0]]; density 1/3 of 6 blocks -> 2 kept: 8 and 5
    mask = block_mask(score, Fraction(1, 3), (2, 2))
    expected = torch.zeros(4, 6, dtype=torch.bool)
    expected[2:4, 2:4] = True
    expected[0:2, 4:6] = True
    assert torch.equal(mask, expected)
    assert torch.equal(block_mask(score, Fraction(1, 3), (2, 2), reduce="mean"), expected)
    # ties between blocks: the lower block index (row-major) wins
    flat = torch.ones(4, 4)
    tie = block_mask(flat, 0.5, (2, 2))
    assert tie[:2].all() and not tie[2:].any()


def test_channel_keeps_whole_rows_by_l1_of_magnitudes():
    w = torch.tensor([[1.0, -3.0], [0.5, 0.5], [-2.0, 2.0], [0.0, 1.0]])
    mask = channel_mask(w.abs(), 0.5)  # L1: 4, 1, 4, 1 -> rows 0 and 2 (tie order)
    assert mask.tolist() == [[True, True], [False, False], [True, True], [False, False]]
    conv = torch.arange(24, dtype=torch.float32).reshape(4, 3, 2, 1)
    cm = channel_mask(conv, 0.25)
    assert cm[3].all() and not cm[:3].any()  # the filter with the largest sum


def test_granular_masks_per_layer_densities_and_nm_density():
    scores = {"a": torch.rand(4, 8), "b": torch.rand(8, 4)}
    masks = granular_masks(scores, {"a": 0.5, "b": 0.25}, "unstructured")
    assert int(masks["a"].sum()) == 16 and int(masks["b"].sum()) == 8
    nm = granular_masks(scores, None, "nm", n=2, m=4)
    assert all(int(m.sum()) == m.numel() // 2 for m in nm.values())
    assert torch.equal(granular_mask(scores["a"], 0.5, "nm"), nm["a"])


def test_minus_inf_scores_rank_last():
    score = torch.tensor([[-float("inf"), 0.0, 1.0, -float("inf")]])
    assert unstructured_mask(score, 0.5).tolist() == [[False, True, True, False]]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: unstructured_mask(s, 0.0), r"density must be in \(0, 1\]"),
        (lambda s: unstructured_mask(s, 1.5), r"density must be in \(0, 1\]"),
        (lambda s: nm_mask(s, 3, 2), "1 <= N <= M"),
        (lambda s: nm_mask(s, 2, 3), "M to divide the input dimension"),
        (lambda s: block_mask(s, 0.5, (3, 2)), "does not tile"),
        (lambda s: granular_mask(s, 0.5, "rows"), "unknown granularity"),
        (lambda s: granular_mask(s, 0.25, "nm"), "fixes the density"),
        (lambda s: channel_mask(s, 0.5, reduce="max"), "unknown block/channel reduction"),
        (lambda s: channel_mask(s[0], 0.5), ">= 2 dims"),
        (lambda s: unstructured_mask(s * float("nan"), 0.5), "NaN"),
    ],
)
def test_bad_input_is_one_line(call, match):
    with pytest.raises(ConfigError, match=match) as err:
        call(torch.rand(4, 8))
    assert "\n" not in str(err.value)
