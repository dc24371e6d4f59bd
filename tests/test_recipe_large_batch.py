"""The large-batch recipe: curve fits on known curves, log-spaced steps, the arm plan (√k lr,
matched updates), claim logic on hand-made rows, bad input, and a smoke run's outputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.init.large_batch import LargeBatch, fit_curves, log_spaced
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fits_tell_log_from_random_walk_and_recover_the_power():
    t = [float(v) for v in log_spaced(2000, 30)]
    log = fit_curves(t, [2.0 * math.log(x) + 1.0 for x in t])
    assert log["log"]["r2"] == pytest.approx(1.0) and log["log"]["a"] == pytest.approx(2.0)
    assert log["rss_ratio"] < 1e-6
    walk = fit_curves(t, [0.3 * math.sqrt(x) + 0.5 for x in t])
    assert walk["rss_ratio"] > 10 and walk["power"]["p"] == pytest.approx(0.5, abs=0.011)
    quarter = fit_curves(t, [x**0.25 for x in t])
    assert quarter["power"]["p"] == pytest.approx(0.25, abs=0.011)
    assert quarter["log"]["r2"] > 0.9  # R² alone would pass t^0.25 (the warning)


def test_log_spaced_steps():
    s = log_spaced(1000, 20)
    assert s[0] == 1 and s[-1] == 1000 and s == sorted(set(s)) and len(s) >= 15
    assert log_spaced(0, 5) == []


def test_plan_scales_lr_and_matches_updates():
    cfg = make_config("large-batch")
    p = LargeBatch().plan(cfg, 3500)
    assert p["a"]["steps"] == 109 * 20 and p["b"]["steps"] == 3 * 20 == p["c"]["steps"]
    assert p["d"]["lr"] == pytest.approx(cfg.lr * math.sqrt(32))
    assert 0 <= p["d"]["steps"] - p["a"]["steps"] < 3  # matched to within one large epoch
    assert p["c"]["ghost"] == 32 and p["b"]["ghost"] is None


def _rows(acc: dict[str, list[float]]) -> list[dict]:
    return [
        {"arm": a, "test_acc_mean": sum(v) / len(v), "test_acc_values": v, "diverged": []}
        for a, v in acc.items()
    ]


def _fits(curve) -> list[dict]:
    t = [float(v) for v in log_spaced(2000, 30)]
    return [
        {"seed": s, "points": len(t), "fit": fit_curves(t, [curve(x) for x in t])} for s in range(3)
    ]


def test_claims_on_hand_made_rows():
    rows = _rows({"a": [90, 91, 92], "b": [80, 81, 82], "c": [84, 84, 86], "d": [88, 88, 89]})
    c = {x.id: x for x in LargeBatch.check_claims(rows, _fits(math.log), chance=10)}
    assert c["log-distance"].held and c["regime-adaptation"].held and c["ghost-bn"].held
    c = {x.id: x for x in LargeBatch.check_claims(rows, _fits(math.sqrt), chance=10)}
    assert c["log-distance"].held is False
    rows = _rows({"a": [90, 91, 92], "b": [80, 81, 82], "c": [80, 82, 81], "d": [82, 83, 84]})
    c = {x.id: x for x in LargeBatch.check_claims(rows, _fits(math.log), chance=10)}
    assert c["regime-adaptation"].held is False and c["ghost-bn"].held is False
    no_gap = _rows({"a": [80, 81, 82], "b": [80, 81, 82], "c": [84, 84, 86], "d": [88, 88, 89]})
    c = {x.id: x for x in LargeBatch.check_claims(no_gap, _fits(math.log), chance=10)}
    assert c["ghost-bn"].held is None and "no generalization gap" in c["ghost-bn"].detail


def test_bad_config():
    with pytest.raises(ConfigError, match="--large-batch 16 must exceed"):
        make_config("large-batch", large_batch=16)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("lb") / "run"
    run_recipe("large-batch", make_config("large-batch", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run_outputs(smoke):
    assert (smoke / "large_batch.png").read_bytes().startswith(b"\x89PNG")
    s = read_json(smoke / "summary.json")
    assert [r["arm"] for r in s["rows"]] == ["a", "b", "c", "d"]
    for curves in s["curves"].values():
        for c in curves:  # distances from the probe: 0 at step 0 excluded, positive after
            assert c and all(d > 0 for _, d in c)
    assert {c["id"] for c in s["claims"]} == {"log-distance", "regime-adaptation", "ghost-bn"}
