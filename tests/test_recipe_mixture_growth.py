"""The mixture-growth recipe: a smoke run's outputs, Net2Net starting from plain 128's
snapshot (function kept at the widening), the FLOP ratio, resume of a lost unit, bad input,
and the claim logic on hand-made rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.growth.widen import widen_state
from weightlab.models.mlp import MLP
from weightlab.recipes.growth.mixture_growth import (
    ARMS,
    MixtureGrowth,
    MixtureGrowthConfig,
    matmul_flops,
)
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import load_tensors, read_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("mg") / "run"
    run_recipe("mixture-growth", make_config("mixture-growth", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run_outputs(smoke):
    assert (smoke / "accuracy_per_arm.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.stem for p in (smoke / "units").glob("*.json")) == [
        "net2net",
        "plain",
        "seed-00",
        "seed-01",
    ]
    s = read_json(smoke / "summary.json")
    assert [r["arm"] for r in s["rows"]] == list(ARMS)
    assert s["members"] == 2 * len(ARMS)
    by = {r["arm"]: r for r in s["rows"]}
    # one test-accuracy point per epoch of the arm's last phase
    assert len(by["plain-256"]["curve_mean"]) == 2 and by["plain-256"]["first_epoch"] == 0
    assert len(by["mixture"]["curve_mean"]) == 1 and by["mixture"]["first_epoch"] == 1
    # FLOPs at the smoke widths 40-16-16-10 -> 40-32-32-10, 1 + 1 epochs
    small, big = 40 * 16 + 16 * 16 + 16 * 10, 40 * 32 + 32 * 32 + 32 * 10
    assert s["flops"]["mixture_over_plain_256"] == pytest.approx((2 * small + big) / (2 * big))
    c = {x["id"]: x for x in s["claims"]}
    assert "boosts top-1 accuracy over the state-of-the-art" in c["a"]["quote"]
    assert "fewer FLOPs to a larger network" in c["b"]["quote"]
    assert "reduced version" in s["reduced_version"]


def test_default_flop_ratio_is_079():
    small, big = matmul_flops([40, 128, 128, 10]), matmul_flops([40, 256, 256, 10])
    assert (small, big) == (22784, 78336)
    assert (2 * small * 30 + big * 30) / (big * 60) == pytest.approx(0.7908, abs=1e-4)


def test_net2net_starts_from_plain_128_at_the_growth_step(smoke):
    # The plain unit keeps plain 128's weights at the end of phase 1; widened as the net2net
    # unit widens them, the 256-wide net computes the same function.
    t = load_tensors(smoke / "units" / "plain.safetensors")
    state = {n[len("seed0.") :]: v for n, v in t.items() if n.startswith("seed0.")}
    assert state["layers.0.weight"].shape == (16, 40)
    small = MLP([40, 16, 16, 10])
    small.load_state_dict(state)
    wide = widen_state(state, MLP([40, 16, 16, 10]), "layers.0", 32, 7, noise=0.01)
    wide = widen_state(wide, MLP([40, 32, 16, 10]), "layers.1", 32, 7, noise=0.01)
    big = MLP([40, 32, 32, 10])
    big.load_state_dict(wide)
    x = torch.randn(64, 40)
    torch.testing.assert_close(big(x), small(x), atol=1e-5, rtol=1e-5)
    n2n = read_json(smoke / "units" / "net2net.json")["metrics"]["members"]
    assert [m["arm"] for m in n2n] == ["net2net", "net2net"]


def test_lost_unit_is_recomputed_alone_and_identically(smoke, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(smoke, copy)
    (copy / "units" / "seed-01.json").unlink()
    run_recipe("mixture-growth", make_config("mixture-growth", smoke=True), out=copy)
    assert read_json(copy / "timing.json")["computed_units"] == ["seed-01"]
    assert (copy / "summary.json").read_bytes() == (smoke / "summary.json").read_bytes()


def test_bad_input_writes_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="batch-size"):
        run_recipe(
            "mixture-growth", make_config("mixture-growth", smoke=True, batch_size=100000), out=out
        )
    assert not out.exists()
    with pytest.raises(ConfigError, match="--width"):
        MixtureGrowthConfig(width=0)


def _rows(acc: dict[str, list[float]], diverged: dict[str, int] | None = None) -> list[dict]:
    rows = []
    for arm in ARMS:
        vals = acc.get(arm, [50.0, 50.0, 50.0])
        excluded = [f"{arm} seed 0"] if (diverged or {}).get(arm) else []
        rows.append(
            {
                "arm": arm,
                "label": arm,
                "test_acc_mean": sum(vals) / len(vals),
                "test_acc_std": float(torch.tensor(vals).std()),
                "test_acc_values": vals,
                "seeds": list(range(len(vals))),
                "excluded": excluded,
            }
        )
    return rows


FLOPS = {"mixture_over_plain_256": 0.79}


def _claims(acc, diverged=None, chance=10.0):
    return {c.id: c for c in MixtureGrowth.check_claims(_rows(acc, diverged), chance, FLOPS)}


def test_claim_logic():
    base = {
        "plain-256": [63.0, 64.0, 65.0],
        "plain-128": [60.0, 61.0, 62.0],
        "random": [63.0, 64.0, 65.0],
        "net2net": [62.0, 63.0, 64.0],
    }
    # (a) needs +0.5 over the best rival (random, 64.0); (b) CI of MG − plain 256 above −1
    held = _claims({**base, "mixture": [63.6, 64.5, 65.7]})
    assert held["a"].held is True and held["b"].held is True
    assert held["a"].evidence["best_rival"] == "random"
    assert held["b"].evidence["control_gap_pts"] == pytest.approx(3.0)
    short = _claims({**base, "mixture": [63.4, 64.4, 65.4]})
    assert short["a"].held is False and short["b"].held is True
    # a wide CI reaching below −1 fails (b)
    wide = _claims({**base, "mixture": [60.0, 66.0, 66.0]})
    assert wide["b"].held is False and wide["b"].evidence["ci_low"] < -1
    # the positive control must differ: plain 128 within 1 pt of plain 256 fails (b)
    flat = _claims({**base, "plain-128": [62.5, 63.5, 64.5], "mixture": [64.0, 65.0, 66.0]})
    assert flat["b"].held is False and "does NOT differ" in flat["b"].detail
    # plain 256 did not learn, or a read member diverged: not tested
    dead = _claims({**base, "plain-256": [11.0, 12.0, 13.0], "mixture": [64.0, 65.0, 66.0]})
    assert dead["a"].held is None and dead["b"].held is None
    div = _claims({**base, "mixture": [64.0, 65.0, 66.0]}, diverged={"net2net": 1})
    assert div["a"].held is None and div["b"].held is True
