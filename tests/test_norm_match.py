"""Norm-matched dense control (weightlab.sparsity.norm_match) on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.sparsity.norm_match import norm_match, norm_scales

W = torch.tensor([[3.0, 4.0], [1.0, 2.0]])  # L2² = 30, L1 = 10
M = torch.tensor([[True, False], [False, True]])  # keeps 3 and 2: L2² = 13, L1 = 5
V = torch.tensor([0.0, 6.0, 8.0])  # L2 = 10, L1 = 14
MV = torch.tensor([False, True, False])  # keeps 6


def test_layer_l2_scale_is_the_ratio_of_norms_and_hits_the_ticket_norm():
    state = {"a.weight": W, "a.bias": torch.tensor([1.0, -1.0])}
    out = norm_match(state, {"a.weight": M})
    assert norm_scales(state, {"a.weight": M})["a.weight"] == pytest.approx(math.sqrt(13 / 30))
    assert float(out["a.weight"].norm()) == pytest.approx(math.sqrt(13))
    torch.testing.assert_close(out["a.weight"], W * math.sqrt(13 / 30))
    # dense: nothing zeroed; biases copied unchanged; the input untouched
    assert bool((out["a.weight"] != 0).all())
    torch.testing.assert_close(out["a.bias"], state["a.bias"])
    assert out["a.bias"] is not state["a.bias"]
    torch.testing.assert_close(W, torch.tensor([[3.0, 4.0], [1.0, 2.0]]))


def test_layer_l1_scale():
    out = norm_match({"w": W}, {"w": M}, p=1)
    torch.testing.assert_close(out["w"], W * 0.5)
    assert float(out["w"].abs().sum()) == pytest.approx(5.0)


def test_each_layer_gets_its_own_factor():
    s = norm_scales({"w": W, "v": V}, {"w": M, "v": MV})
    assert s["w"] == pytest.approx(math.sqrt(13 / 30))
    assert s["v"] == pytest.approx(0.6)


def test_global_scope_matches_the_norm_of_all_masked_tensors_together():
    s = norm_scales({"w": W, "v": V}, {"w": M, "v": MV}, scope="global")
    c = math.sqrt((13 + 36) / (30 + 100))
    assert s == pytest.approx({"w": c, "v": c})
    s1 = norm_scales({"w": W, "v": V}, {"w": M, "v": MV}, p=1, scope="global")
    assert s1 == pytest.approx({"w": 11 / 24, "v": 11 / 24})


def test_zero_tensor_keeps_factor_one():
    assert norm_scales({"w": torch.zeros(2, 2)}, {"w": M}) == {"w": 1.0}


@pytest.mark.parametrize(
    ("state", "masks", "kw", "msg"),
    [
        ({"w": W}, {"w": M}, {"p": 3}, "norm order"),
        ({"w": W}, {"w": M}, {"scope": "row"}, "scope"),
        ({"w": W}, {"x": M}, {}, "names no tensor"),
        ({"w": W}, {"w": MV}, {}, "shape"),
    ],
)
def test_bad_input_is_one_line(state, masks, kw, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        norm_match(state, masks, **kw)
    assert "\n" not in str(e.value)
