"""The depth-aware recipe: variance profile, claim logic on hand-made rows, and a smoke run."""

from __future__ import annotations

import pytest
import torch

from weightlab.init.registry import initialize
from weightlab.models.mlp import MLP
from weightlab.recipes.init.depth_aware import DepthAware
from weightlab.recipes.runner import make_config, run_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_variance_profile_grows_under_depth_aware_and_is_flat_under_he():
    model = MLP([64] + [256] * 8 + [10])
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(0))
    initialize(model, "he", seed=1)
    he = DepthAware.variance_profile(model, x)
    initialize(model, "depth_aware", seed=1, growth=4.0)
    da = DepthAware.variance_profile(model, x)
    assert len(he) == 9
    # same draws scaled: ratio is the cumulative product of the multipliers, ending at 4
    assert da[-1] / he[-1] == pytest.approx(4.0, rel=1e-4)
    assert all(
        b / hb > a / ha for a, ha, b, hb in zip(da[:-1], he[:-1], da[1:], he[1:], strict=True)
    )


def _row(init, acc, n=5):
    return {"init": init, "test_acc_mean": acc, "test_acc_std": 1.0, "excluded": [], "n": n}


def test_claims_on_hand_made_rows():
    rows = [_row("xavier", 30), _row("he", 60), _row("orthogonal", 40), _row("depth_aware", 61)]
    (c,) = DepthAware.check_claims(rows, chance=10.0)
    assert c.verdict == "held" and c.evidence["difference_pts"] == pytest.approx(1.0)
    rows[3] = _row("depth_aware", 59)
    assert DepthAware.check_claims(rows, chance=10.0)[0].verdict == "did not hold"
    rows[1] = _row("he", 25)  # He below chance + 20: not tested
    assert DepthAware.check_claims(rows, chance=10.0)[0].verdict == "not tested"


@pytest.mark.slow  # ~6 s wall on a loaded 2-core machine; conformance also runs it
def test_smoke_run(tmp_path):
    cfg = make_config("depth-aware", smoke=True)
    _, summary = run_recipe("depth-aware", cfg, out=tmp_path / "run")
    assert [r["init"] for r in summary["rows"]] == ["xavier", "he", "orthogonal", "depth_aware"]
    prof = summary["variance_profile"]
    assert set(prof) == {"xavier", "he", "orthogonal", "depth_aware"} and len(prof["he"]) == 6
    assert summary["claims"][0]["verdict"] in ("held", "did not hold", "not tested")
