"""The wide-equals-kernel recipe: data, slope fit, claim logic, bad input, smoke run."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.kernels.wide_equals_kernel import WideEqualsKernel, loglog_slope, make_task
from weightlab.recipes.runner import make_config, run_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_task_and_slope():
    t = make_task(3, 20, 50)
    assert t.train.x.shape == (20, 3) and t.test.y.shape == (50, 1) and len(t.val) == 0
    assert torch.allclose(t.train.y[:, 0], torch.sin(t.train.x.sum(1)))
    assert loglog_slope([64, 256, 1024], [1.0, 0.5, 0.25]) == pytest.approx(-0.5)


def _row(w, lin, cen, r2=0.9):
    return {
        "width": w,
        "lin_mean": lin,
        "lin_std": 0.0,
        "centred_mean": cen,
        "centred_std": 0.0,
        "train_r2_mean": r2,
    }


def test_claim_logic():
    rows = [_row(64, 0.4, 0.2), _row(256, 0.2, 0.15), _row(1024, 0.1, 0.14)]
    got = {c.id: c for c in WideEqualsKernel.check_claims(rows, [])}
    assert got["linearization"].verdict == "held"
    assert got["linearization"].evidence["slope"] == pytest.approx(-0.5)
    assert got["centred"].verdict == "did not hold"  # slope -0.18
    assert all(
        c.verdict == "not tested" for c in WideEqualsKernel.check_claims(rows, ["width 64 raw"])
    )
    rows[-1]["train_r2_mean"] = 0.05
    assert all(c.verdict == "not tested" for c in WideEqualsKernel.check_claims(rows, []))


def test_bad_input():
    with pytest.raises(ConfigError, match="increasing"):
        make_config("wide-equals-kernel", widths="256,64")
    with pytest.raises(ConfigError, match="increasing"):
        make_config("wide-equals-kernel", widths="64")


def test_smoke_run(tmp_path):
    cfg = make_config("wide-equals-kernel", smoke=True)
    _, summary = run_recipe("wide-equals-kernel", cfg, out=tmp_path / "run")
    assert [c["id"] for c in summary["claims"]] == ["linearization", "centred"]
    rows = summary["rows"]
    assert [r["width"] for r in rows] == [32, 128]
    assert [e["M"] for e in rows[0]["ensemble"]] == [1, 2]
    assert all(math.isfinite(r["lin_mean"]) and r["lin_mean"] > 0 for r in rows)
    assert summary["diverged_members"] == []
