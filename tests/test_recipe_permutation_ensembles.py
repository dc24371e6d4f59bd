"""The permutation-ensembles recipe: the task and top-m rounding on hand cases, a smoke run
(outputs, convergence, resume), the claim logic on hand-made rows, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.kernels.permutation_ensembles import (
    PermutationEnsembles,
    all_inputs,
    exact_rate,
    permutation,
    permutation_task,
    top_m_round,
)
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")
NAME = "permutation-ensembles"


def test_task_and_rounding_hand_cases():
    perm = torch.tensor([2, 0, 1])  # e0 -> e2, e1 -> e0, e2 -> e1
    t = permutation_task(3, perm)
    assert torch.equal(t.train.y, torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]))
    assert t.test.x.shape == (7, 3) and torch.equal(all_inputs(3)[2], torch.tensor([1.0, 1, 0]))
    # input [1, 1, 0] maps to e2 + e0
    assert torch.equal(t.test.y[2], torch.tensor([1.0, 0, 1]))
    out = torch.tensor([[0.4, 0.1, 0.45], [0.9, 0.2, 0.3]])
    x = torch.tensor([[1.0, 1, 0], [1, 0, 0]])
    assert torch.equal(top_m_round(out, x), torch.tensor([[1.0, 0, 1], [1, 0, 0]]))
    # 0.5-thresholding rejects the first row, top-m accepts it
    y = torch.tensor([[1.0, 0, 1], [1, 0, 0]])
    assert exact_rate(out, x, y) == 1.0 and exact_rate(out, x, y, "threshold") == 0.5
    assert torch.equal(permutation(5, 1), permutation(5, 1))
    assert sorted(permutation(6, 0).tolist()) == list(range(6))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pe") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    run_recipe(NAME, make_config(NAME, smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run(smoke):
    s = read_json(smoke / "summary.json")
    assert [r["k"] for r in s["rows"]] == [3, 4]
    assert [p["M"] for p in s["rows"][0]["by_m"]] == [1, 2, 4, 8]
    for r in s["rows"]:
        assert r["max_train_mse"] < 1e-6 and r["diverged"] == 0  # GD converged
        assert r["infinite_ensemble_top_m"] == 1.0  # the analytic NTK-GP mean is exact
    assert (smoke / "exact_vs_ensemble.png").read_bytes().startswith(b"\x89PNG")
    assert {c["id"] for c in s["claims"]} == {"a", "b"}


def test_lost_unit_is_recomputed_identically(smoke, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(smoke, copy)
    (copy / "units" / "seed-01.json").unlink()
    run_recipe(NAME, make_config(NAME, smoke=True), out=copy)
    assert read_json(copy / "timing.json")["computed_units"] == ["seed-01"]
    assert (copy / "summary.json").read_bytes() == (smoke / "summary.json").read_bytes()


def _row(k, means, all_exact, mse=1e-12, diverged=0):
    sizes = [1, 2, 4, 8]
    return {
        "k": k,
        "by_m": [
            {"M": m, "mean": v, "std": 0.0, "all_exact": a}
            for m, v, a in zip(sizes, means, all_exact, strict=True)
        ],
        "smallest_all_exact_m": next(
            (m for m, a in zip(sizes, all_exact, strict=True) if a >= 4), None
        ),
        "repeats_needed": 4,
        "repeats": 5,
        "max_train_mse": mse,
        "diverged": diverged,
    }


def test_claims_logic():
    good = [_row(4, [0.9, 1, 1, 1], [2, 5, 5, 5]), _row(10, [0.5, 0.9, 0.995, 1], [0, 1, 3, 4])]
    c = {x.id: x for x in PermutationEnsembles.check_claims(good)}
    assert c["a"].verdict == "held" and c["b"].verdict == "held"
    assert c["b"].evidence["smallest_all_exact_m"] == {"4": 2, "10": 8}
    # k = 10 never all-exact: censored above the largest M, still larger
    cens = [good[0], _row(10, [0.5, 0.9, 0.95, 0.98], [0, 0, 0, 3])]
    c = {x.id: x for x in PermutationEnsembles.check_claims(cens)}
    assert c["a"].verdict == "did not hold" and c["b"].verdict == "held" and "> 8" in c["b"].detail
    same = [_row(4, [1, 1, 1, 1], [5, 5, 5, 5]), _row(10, [1, 1, 1, 1], [5, 5, 5, 5])]
    assert PermutationEnsembles.check_claims(same)[1].verdict == "did not hold"
    bad = [good[0], _row(10, [0.5, 0.9, 0.995, 1], [0, 1, 3, 4], mse=0.3)]
    assert {x.verdict for x in PermutationEnsembles.check_claims(bad)} == {"not tested"}
    lo_never = [_row(4, [0.9, 0.9, 0.9, 0.9], [0, 0, 0, 0]), good[1]]
    assert PermutationEnsembles.check_claims(lo_never)[1].verdict == "not tested"


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"ks": "4,x"}, "ks"),
        ({"ks": "1,4"}, ">= 2"),
        ({"ks": "4,20"}, "<= 16"),
        ({"width": 0}, "width"),
        ({"members": 0}, "members"),
        ({"lr_scale": 0.0}, "lr-scale"),
        ({"data": "digits"}, "data"),
    ],
)
def test_bad_config_is_one_line(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_config(NAME, smoke=True, **override)
    assert "\n" not in str(e.value)
