"""The snnk recipe: the SNNK MLP (shared first/last layers, trainable counts, V = Ψ(W) at init),
the pointwise-error slope, a smoke run with resume, the claim logic, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.models.factory import build
from weightlab.models.mlp import MLP
from weightlab.recipes.kernels.snnk import SNNK, SNNKMLP, pointwise_errors, trainable
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


def test_snnk_mlp_shares_layers_and_counts_parameters():
    base = build(MLP, [40, 256, 256, 10], activation="sin", seed=3)
    net = SNNKMLP(base, 64, seed=3)
    assert trainable(base) == 40 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert trainable(net) == 40 * 256 + 256 + 64 * 256 + 256 * 10 + 10
    assert torch.equal(net.first.weight, base.layers[0].weight)
    x = torch.randn(5, 40)
    assert net(x).shape == (5, 10)
    with pytest.raises(ConfigError, match="sin units"):
        SNNKMLP(build(MLP, [40, 8, 8, 10], activation="relu", seed=0), 4, 0)


def test_pointwise_error_slope_is_minus_half():
    rows = pointwise_errors([16, 64, 256, 1024])["rows"]
    errs = [r["rms_error"] for r in rows]
    assert all(a > b for a, b in zip(errs, errs[1:], strict=False))
    # each 4x more features halves the error, within Monte-Carlo noise
    for a, b in zip(errs, errs[1:], strict=False):
        assert 1.5 < a / b < 2.7


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("snnk") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    run_recipe("snnk", make_config("snnk", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run_and_resume(smoke, tmp_path):
    s = read_json(smoke / "summary.json")
    assert {(r["arm"], r["m"]) for r in s["rows"]} == {("original", 0), ("linear", 0), ("snnk", 16)}
    assert s["pointwise"]["slope"] < -0.3 and "by construction" in s["pointwise"]["note"]
    assert (smoke / "snnk.png").read_bytes().startswith(b"\x89PNG")
    copy = tmp_path / "copy"
    shutil.copytree(smoke, copy)
    (copy / "units" / "arm-original.json").unlink()
    run_recipe("snnk", make_config("snnk", smoke=True), out=copy)
    assert read_json(copy / "timing.json")["computed_units"] == ["arm-original"]
    assert (copy / "summary.json").read_bytes() == (smoke / "summary.json").read_bytes()


def _rows(orig, snnk, lin, excluded=()):
    def row(arm, m, vals):
        return {
            "arm": arm,
            "m": m,
            "trainable": 100,
            "test_acc_mean": sum(vals) / len(vals),
            "test_acc_values": vals,
            "seeds": list(range(len(vals))),
            "excluded": list(excluded) if arm == "snnk" else [],
        }

    return [row("original", 0, orig), row("snnk", 256, snnk), row("linear", 0, lin)]


def test_claim_logic():
    held = SNNK.check_claims(_rows([70, 71, 69], [69.5, 70, 68.8], [40, 41, 39]), 10.0)[0]
    assert held.verdict == "held" and held.evidence["control"]["differs"]
    gap = SNNK.check_claims(_rows([70, 71, 69], [64, 65, 63.5], [40, 41, 39]), 10.0)[0]
    assert gap.verdict == "did not hold"
    # a control that does not differ: the test could not see a difference
    weak = SNNK.check_claims(_rows([70, 71, 69], [69.5, 70, 68.8], [69, 70, 70]), 10.0)[0]
    assert weak.verdict == "did not hold" and "does NOT differ" in weak.detail
    chance = SNNK.check_claims(_rows([12, 13, 11], [12, 12, 12], [10, 10, 10]), 10.0)[0]
    assert chance.verdict == "not tested"
    div = _rows([70, 71, 69], [69.5, 70, 68.8], [40, 41, 39], excluded=["snnk m=256 seed 1"])
    assert SNNK.check_claims(div, 10.0)[0].verdict == "not tested"


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"features": "0"}, "features"),
        ({"point_features": "a"}, "point-features"),
        ({"hidden": 0}, "hidden"),
    ],
)
def test_bad_config_is_one_line(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_config("snnk", smoke=True, **override)
    assert "\n" not in str(e.value)
