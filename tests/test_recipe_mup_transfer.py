"""The mup-transfer recipe: a smoke run's outputs, the exact step count, bad input, and the
claim logic on hand-made best-lr tables."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.init.mup_transfer import MupTransfer, MupTransferConfig, steps_layout
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, float]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("mt") / "run"
    c0 = time.process_time()
    run_recipe("mup-transfer", make_config("mup-transfer", smoke=True), out=out)
    cpu = time.process_time() - c0
    torch.set_num_threads(before)
    return out, cpu


def test_smoke_run_outputs(smoke):
    out, cpu = smoke
    s = read_json(out / "summary.json")
    assert [c["id"] for c in s["claims"]] == ["a", "b", "c"]
    assert s["members"] == 2 * 3 * 3 * 1  # params × widths × lrs × seeds
    assert {r["param"] for r in s["rows"]} == {"sp", "mup"}
    # at the base width SP and μP are the same model: identical losses
    sp8, mu8 = (
        next(r for r in s["rows"] if r["param"] == p and r["width"] == 8) for p in ("sp", "mup")
    )
    assert sp8["loss_by_lr"] == pytest.approx(mu8["loss_by_lr"], rel=1e-5)
    bs = read_json(out / "base_shapes.json")
    assert bs["base_shapes"]["base"]["layers.1.weight"] == [8, 8]
    assert bs["parametrization"]["name"] == "mup"
    assert (out / "mup_transfer.png").read_bytes().startswith(b"\x89PNG")
    timing = read_json(out / "timing.json")
    assert "share of peak" in str(timing)
    print(f"[mup-transfer smoke] {cpu:.2f} s CPU")


def test_steps_layout_is_exact():
    assert steps_layout(3500, 64, 500) == (3200, 10)
    assert steps_layout(100, 32, 20) == (64, 10)  # k = 2: the largest divisor of 20 with 32k <= 100
    with pytest.raises(ConfigError, match="exceeds"):
        steps_layout(10, 32, 20)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"widths": "64"}, "at least two widths"),
        ({"base_width": 32}, "must be one of"),
        ({"lr_log2_min": -5, "lr_log2_max": -4}, ">= 3 values"),
        ({"steps": 510}, "multiple of"),
        ({"widths": "64,64"}, "distinct"),
    ],
)
def test_bad_config_is_one_line(kw, match):
    with pytest.raises(ConfigError, match=match):
        MupTransferConfig(**kw)


def _cfg():
    return MupTransferConfig(widths="64,256,1024", lr_log2_min=-10, lr_log2_max=-5)


def test_claims_on_hand_made_tables():
    cfg = _cfg()  # grid -10..-5: indices 0..5
    coord_ok = {"mup": {"max_abs_slope": 0.1, "max_slope": 0.1}, "sp": {"max_abs_slope": 0.9, "max_slope": 0.9}}  # fmt: skip
    best = {("mup", 64): 2, ("mup", 256): 3, ("mup", 1024): 2,
            ("sp", 64): 2, ("sp", 256): 1, ("sp", 1024): 0}  # fmt: skip
    a, b, c = MupTransfer.check_claims(cfg, best, coord_ok)
    assert (a.held, b.held, c.held) == (True, True, True)
    best[("mup", 1024)] = 4  # two steps away: does not stay put
    best[("sp", 1024)] = 1  # one step: does not drift
    a, b, _ = MupTransfer.check_claims(cfg, best, coord_ok)
    assert (a.held, b.held) == (False, False)
    best[("sp", 64)] = 0  # base width on the grid's edge: not tested
    a, b, _ = MupTransfer.check_claims(cfg, best, coord_ok)
    assert (a.held, b.held) == (None, None)
    best[("sp", 64)] = 2
    small = MupTransferConfig(widths="64,256,1024", lr_log2_min=-9, lr_log2_max=-5)
    a, b, _ = MupTransfer.check_claims(small, best, coord_ok)  # 5 lrs: fewer than the 6 needed
    assert (a.held, b.held) == (None, None) and "fewer than the 6" in a.detail
    coord_bad = {"mup": {"max_abs_slope": 0.3, "max_slope": 0.3}, "sp": coord_ok["sp"]}
    assert MupTransfer.check_claims(cfg, best, coord_bad)[2].held is False


def test_claims_need_a_sweep_that_learned_and_finite_slopes():
    cfg = _cfg()
    best = {(p, w): 2 for p in ("sp", "mup") for w in (64, 256, 1024)}
    coord = {"mup": {"max_abs_slope": 0.1, "max_slope": 0.1}, "sp": {"max_abs_slope": None, "max_slope": None}}  # fmt: skip
    claims = MupTransfer.check_claims(cfg, best, coord, "the sweep did not learn")
    assert [c.held for c in claims] == [None, None, None]
    assert MupTransfer.check_claims(cfg, best, coord)[2].held is None  # non-finite slopes
