"""Recipe hebbian-multitasking: the cascade, the cascade start, claims on hand-made rows,
bad input, a small run."""

from __future__ import annotations

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.dynamics.hebbian_multitasking import (
    HebbianMultitasking,
    MultitaskingConfig,
    cascade,
    cascade_state,
)
from weightlab.recipes.runner import run_recipe
from weightlab.seeding import generator

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cascade_values():
    assert cascade(0.2, 3) == pytest.approx([0.8, 0.16, 0.032])
    assert cascade(0.9, 3)[2] / cascade(0.9, 3)[0] == pytest.approx(0.81)


def test_cascade_state_takes_the_first_nonzero_pattern_entry():
    xi = torch.tensor(
        [[1.0, 0.0, 0.0, 0.0, -1.0], [-1.0, -1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    sigma = cascade_state(xi, generator(0))
    assert sigma[:3].tolist() == [1.0, -1.0, 1.0] and sigma[4] == -1.0
    assert sigma[3].item() in (-1.0, 1.0)  # no pattern: a random sign


def _row(d, sorted_mean, start="cascade", converged=4):
    return {
        "dilution": d,
        "start": start,
        "sorted_mean": sorted_mean,
        "cascade": cascade(d, 3),
        "ratio_last_first": sorted_mean[-1] / sorted_mean[0],
        "converged": converged,
        "trials": 4,
    }


def _both(d, sorted_mean, converged=4, random=None):
    return [_row(d, sorted_mean, converged=converged), _row(d, random or sorted_mean, "random")]


def test_claims_on_hand_made_rows():
    rows = [
        *_both(0.1, [0.90, 0.10, 0.01]),
        *_both(0.2, [0.80, 0.18, 0.05]),
        *_both(0.9, [0.10, 0.09, 0.082]),
    ]
    a, b = HebbianMultitasking.check_claims(rows)
    assert a.held is True and a.evidence["cascade"]["largest_gap"] == pytest.approx(0.02)
    assert b.held is True and b.evidence["random"]["ratio"] == pytest.approx(0.82)
    # a mixture state from the random start fails (a), whatever the cascade start does
    rows[1] = _row(0.1, [0.5, 0.5, 0.5], start="random")
    a = HebbianMultitasking.check_claims(rows)[0]
    assert a.held is False and a.evidence["cascade"]["held"] and not a.evidence["random"]["held"]
    rows[2:4] = _both(0.2, [0.80, 0.20, 0.05])  # 0.04 off the cascade's 0.16
    rows[4:6] = _both(0.9, [0.10, 0.09, 0.082], random=[0.10, 0.09, 0.07])
    a, b = HebbianMultitasking.check_claims(rows)
    assert a.held is False and b.held is False and b.evidence["cascade"]["held"]
    rows[4:6] = _both(0.9, [0.10, 0.09, 0.07], converged=3)
    assert HebbianMultitasking.check_claims(rows)[1].held is None
    assert HebbianMultitasking.check_claims(_both(0.5, [0.5, 0.25, 0.12]))[0].held is None
    assert HebbianMultitasking.check_claims([_row(0.9, [0.1, 0.09, 0.08])])[1].held is None


@pytest.mark.parametrize(
    "override, match",
    [
        ({"dilutions": "0.1,1.0"}, r"dilution d must lie in \[0, 1\)"),
        ({"dilutions": "-0.1,0.5"}, r"dilution d must lie in \[0, 1\)"),
        ({"dilutions": "0.5,0.2"}, "increase strictly"),
        ({"k": 0}, "--k"),
        ({"n": 0}, "--n"),
    ],
)
def test_bad_config_is_a_one_line_error(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        MultitaskingConfig(**override)
    assert "\n" not in str(e.value)


def test_a_small_run_follows_the_cascade_at_mild_dilution(tmp_path):
    cfg = MultitaskingConfig(seeds=3, n=1000, trials=2, dilutions="0.2,0.9")
    _, summary = run_recipe("hebbian-multitasking", cfg, out=tmp_path / "run")
    rows = {(r["dilution"], r["start"]): r for r in summary["rows"]}
    mild = rows[(0.2, "cascade")]
    assert mild["converged"] == mild["trials"] == 6
    for got, want in zip(mild["sorted_mean"], cascade(0.2, 3), strict=True):
        assert abs(got - want) < 0.05  # N = 1000: a few 1/sqrt(N)
    assert summary["members"] == 3 * 2 * 2 * 2


def test_cli_rejects_a_bad_dilution_with_exit_code_2_and_writes_nothing(cli, tmp_path):
    out = tmp_path / "r"
    rc, _, err = cli("run", "hebbian-multitasking", "--dilutions", "0.5,1", "--out", out)
    assert rc == 2 and "dilution d must lie in [0, 1)" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
