"""The wide-deep-optimal recipe [#59]: a smoke run's outputs and determinism, the reference
classifiers, the claim logic on hand-made rows (held, did not hold, not tested), bad input."""

from __future__ import annotations

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.kernels.wide_deep_optimal import (
    ACTIVATIONS,
    WideDeepOptimal,
    reference_predictions,
)
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")
NAME = "wide-deep-optimal"
PREDICTED = {
    "relu": "majority_vote",
    "hermite2": "nearest_neighbor",
    "hermite12": "singular_kernel",
}


def test_smoke_run_outputs_and_determinism(tmp_path):
    cfg = make_config(NAME, smoke=True)
    run_recipe(NAME, cfg, out=tmp_path / "a")
    run_recipe(NAME, cfg, out=tmp_path / "b")
    a, b = tmp_path / "a" / "summary.json", tmp_path / "b" / "summary.json"
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / "agreement_vs_depth.png").read_bytes().startswith(b"\x89PNG")
    s = read_json(a)
    assert s["predicted"] == PREDICTED
    assert [(r["activation"], r["depth"]) for r in s["rows"]] == [
        (act, d) for act in ACTIVATIONS for d in (1, 3, 10)
    ]
    by = {(r["activation"], r["depth"]): r for r in s["rows"]}
    # He_2/√2 at depth 10: the Gram is the identity and the classifier is 1-NN.
    assert by[("hermite2", 10)]["agree_nearest_neighbor_mean"] == 1.0
    assert by[("hermite2", 10)]["condition_max"] < 1.01
    # Normalized ReLU: the mean off-diagonal ratio falls with depth towards 1/4.
    ratios = [by[("relu", d)]["offdiag_ratio_mean"] for d in (1, 3, 10)]
    assert ratios[0] > ratios[1] > ratios[2] > 0.25
    assert [c["id"] for c in s["claims"]] == list(ACTIVATIONS)


def test_reference_classifiers():
    g = torch.Generator().manual_seed(0)
    xtr = torch.rand(20, 5, generator=g, dtype=torch.float64)
    ytr = torch.tensor([1] * 9 + [0] * 6 + [2] * 5)
    xte = torch.cat([xtr[:3] * 2.0, torch.rand(4, 5, generator=g, dtype=torch.float64)])
    refs = reference_predictions(xtr, ytr, xte, 3)
    assert (refs["majority_vote"] == 1).all()
    assert torch.equal(refs["nearest_neighbor"][:3], ytr[:3])  # same direction as a train point
    assert torch.equal(refs["singular_kernel"][:3], ytr[:3])  # infinite weight on the copy


def _rows(act: str, agree: dict[int, tuple[float, float, float]], valid=None) -> list[dict]:
    rows = []
    for depth, (nn, mv, sk) in agree.items():
        rows.append(
            {
                "activation": act,
                "depth": depth,
                "agree_nearest_neighbor_mean": nn,
                "agree_nearest_neighbor_std": 0.0,
                "agree_majority_vote_mean": mv,
                "agree_majority_vote_std": 0.0,
                "agree_singular_kernel_mean": sk,
                "agree_singular_kernel_std": 0.0,
                "accuracy_mean": 0.9,
                "condition_max": 10.0,
                "valid": True if valid is None else valid[depth],
            }
        )
    return rows


def test_claim_logic_on_hand_made_rows():
    rows = (
        _rows(
            "relu",
            {10: (0.9, 0.2, 0.9), 1000: (0.1, 0.95, 0.1), 3000: (0.0, 1.0, 0.0)},
            valid={10: True, 1000: True, 3000: False},
        )
        + _rows("hermite2", {10: (0.97, 0.1, 0.97)})  # a tie with the singular classifier
        + _rows("hermite12", {10: (0.5, 0.1, 0.6)}, valid={10: False})
    )
    relu, h2, h12 = WideDeepOptimal.check_claims(rows, PREDICTED)
    assert relu.held is True and "L = 1000" in relu.detail  # deepest valid, not 3000
    assert h2.held is False  # 0.97 is not above 0.97
    assert h12.held is None and "condition number" in h12.detail


@pytest.mark.parametrize(
    "override, match",
    [
        ({"depths": "0,3"}, "--depths must be distinct positive integers; got '0,3'"),
        ({"depths": "a"}, "--depths must be comma-separated"),
        ({"data": "mnist1d"}, "--data"),
        ({"n_train": 5}, "--n-train"),
    ],
)
def test_bad_input_is_one_line(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_config(NAME, **override)
    assert "\n" not in str(e.value)
