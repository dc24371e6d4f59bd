"""The resnet-shortcuts recipe [#100]: a smoke run's outputs (every arm, paired inits),
bad input (phases that do not cover training), and the claim logic on hand-made rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.dynamics.resnet_shortcuts import ResnetShortcuts, _outcome
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("rs") / "run"
    run_recipe("resnet-shortcuts", make_config("resnet-shortcuts", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run(smoke):
    assert (smoke / "outcomes.png").read_bytes().startswith(b"\x89PNG")
    s = read_json(smoke / "summary.json")
    assert [c["id"] for c in s["claims"]] == ["a", "b"]
    runs = s["runs"]
    assert len(runs) == s["members"] == 2 * 4 * 6  # teachers x arms x inits
    arms = {(r["shortcut"], r["schedule"]) for r in runs}
    assert arms == {(a, b) for a in (True, False) for b in ("two-phase", "single")}
    # every arm of one (teacher, init) starts from the same loss (same a(0); the plain arms
    # also share w(0))
    for t in (0, 1):
        for i in range(6):
            sc = {
                r["loss0"] for r in runs if (r["teacher"], r["init"], r["shortcut"]) == (t, i, True)
            }
            pl = {
                r["loss0"]
                for r in runs
                if (r["teacher"], r["init"], r["shortcut"]) == (t, i, False)
            }
            assert len(sc) == 1 and len(pl) == 1
    # training lowers the loss
    assert sum(r["loss"] < r["loss0"] for r in runs) == len(runs)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"phase_steps": "30,50"}, "cover 80 steps but training has 90"),
        ({"phase_steps": "0,90"}, "at least one step"),
        ({"phase_steps": "90"}, "two step counts"),
        ({"phase_steps": "a,b"}, "two step counts"),
        ({"data": "dsd"}, "conv_teacher"),
        ({"lr": 0.0}, "--lr"),
    ],
)
def test_bad_config_is_a_one_line_error(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_config("resnet-shortcuts", smoke=True, **override)
    assert "\n" not in str(e.value)


def test_outcome_rule():
    base = {"diverged": False, "loss0": 1.0}
    assert _outcome({**base, "loss": 5e-4, "angle": 0.01}) == "global"
    assert _outcome({**base, "loss": 5e-4, "angle": 0.2}) == "other"
    assert _outcome({**base, "loss": 5e-3, "angle": 0.01}) == "other"
    assert _outcome({**base, "loss": 0.5, "angle": 2.6}) == "spurious"
    assert _outcome({"diverged": True, "loss0": 1.0, "loss": None, "angle": None}) == "diverged"


def _rows(best, plain, spreads, diverged=0):
    rows = []
    for t, (g, (sp, (lo, hi))) in enumerate(
        zip(best, zip(plain, spreads, strict=True), strict=True)
    ):
        rows.append(
            {
                "shortcut": "shortcut",
                "schedule": "two-phase",
                "teacher": t,
                "runs": 50,
                "global": g,
                "spurious": 50 - g,
                "other": 0,
                "diverged": diverged,
                "spurious_angle_min": 2.6 if g < 50 else None,
                "spurious_angle_max": 2.6 if g < 50 else None,
            }
        )
        rows.append(
            {
                "shortcut": "plain",
                "schedule": "single",
                "teacher": t,
                "runs": 50,
                "global": 50 - sp,
                "spurious": sp,
                "other": 0,
                "diverged": 0,
                "spurious_angle_min": lo if sp else None,
                "spurious_angle_max": hi if sp else None,
            }
        )
    return rows  # fmt: skip


def _verdicts(rows):
    return [c.verdict for c in ResnetShortcuts.check_claims(rows, 50)]


def test_claims():
    spreads = [(2.52, 2.56), (2.60, 2.61), (2.66, 2.68)]
    # the measurement: 50/50 x 3; 12, 1, 11 spurious at 2.52-2.68
    assert _verdicts(_rows([50, 50, 50], [12, 1, 11], spreads)) == ["held", "held"]
    assert _verdicts(_rows([50, 47, 50], [12, 1, 11], spreads)) == ["did not hold", "held"]
    assert _verdicts(_rows([50, 50, 50], [5, 1, 8], spreads))[1] == "did not hold"  # 14 < 15
    wide = [(2.4, 2.6), (2.60, 2.61), (2.66, 2.68)]
    assert _verdicts(_rows([50, 50, 50], [12, 1, 11], wide))[1] == "did not hold"
    # training that does not work leaves (b) untested
    assert _verdicts(_rows([0, 0, 0], [50, 50, 50], spreads)) == ["did not hold", "not tested"]
    assert _verdicts(_rows([50, 50, 50], [12, 1, 11], spreads, diverged=1)) == ["not tested"] * 2
