"""The neumeta recipe: a smoke run's outputs, the parameter count of the compressed width
(703 of 2,698), truncation, resume of a lost unit, bad input (a width outside the field's
training range), and the claim logic on hand-made rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.growth.neumeta import ARMS, NeuMeta, NeuMetaConfig, mlp_params, truncate
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, weightlab_cache) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("nm") / "run"
    run_recipe("neumeta", make_config("neumeta", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run_outputs(smoke):
    assert (smoke / "neumeta.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.stem for p in (smoke / "units").glob("*.json")) == ["fields", "reference"]
    s = read_json(smoke / "summary.json")
    got = {(r["arm"], r["width"]) for r in s["rows"]}
    field_rows = {
        (a, w) for a in ("smoothed", "unsmoothed", "no-noise", "truncation") for w in (8, 10, 12)
    }
    assert got == field_rows | {("scratch", 10), ("reference", 12)}
    assert all(r["n"] == 2 and 0 <= r["acc_mean"] <= 100 for r in s["rows"])
    assert set(s["field_loss_curves"]) == {"smoothed", "unsmoothed", "no-noise"}
    assert len(s["field_loss_curves"]["smoothed"]) == 8  # 8 steps: one point each
    c = {x["id"]: x for x in s["claims"]}
    assert (
        c["a"]["quote"] == "NeuMeta sustains full-size performance even at a 75% compression rate"
    )
    assert c["b"]["quote"] == (
        "the final performance closely relates on smoothness of the learned manifold"
    )
    assert "reduced version" in s["reduced_version"]
    assert "seconds" not in str(s) and "weight fields (stacked)" in str(
        read_json(smoke / "timing.json")
    )


def test_truncation_at_full_width_is_the_reference(smoke):
    """Truncation to the reference width gives back the smoothed reference, whose accuracy
    equals the trained reference's (smoothing preserves the function)."""
    s = read_json(smoke / "summary.json")
    by = {(r["arm"], r["width"]): r for r in s["rows"]}
    assert by[("truncation", 12)]["acc_values"] == pytest.approx(
        by[("reference", 12)]["acc_values"]
    )


def test_parameter_counts():
    assert mlp_params(40, 11, 10) == 703 and mlp_params(40, 32, 10) == 2698
    assert 0.25 < 703 / 2698 < 0.27


def test_truncate_keeps_the_first_units():
    st = {
        "layers.0.weight": torch.arange(12.0).reshape(4, 3),
        "layers.0.bias": torch.arange(4.0),
        "layers.1.weight": torch.arange(16.0).reshape(4, 4),
        "layers.1.bias": torch.arange(4.0),
        "layers.2.weight": torch.arange(8.0).reshape(2, 4),
        "layers.2.bias": torch.arange(2.0),
    }
    t = truncate(st, 2)
    assert torch.equal(t["layers.0.weight"], st["layers.0.weight"][:2])
    assert torch.equal(t["layers.1.weight"], st["layers.1.weight"][:2, :2])
    assert torch.equal(t["layers.2.weight"], st["layers.2.weight"][:, :2])
    assert torch.equal(t["layers.2.bias"], st["layers.2.bias"])


def test_lost_unit_is_recomputed_alone_and_closely(smoke, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(smoke, copy)
    (copy / "units" / "fields.json").unlink()
    run_recipe("neumeta", make_config("neumeta", smoke=True), out=copy)
    assert read_json(copy / "timing.json")["computed_units"] == ["fields"]
    # Not byte-identical: the stacked fields' float32 batched matmuls round differently
    # with the process's allocation history (a reference unit trained in-process before
    # them, or read from disk), ~1e-7 relative per step; the recomputed unit agrees closely.
    a = read_json(smoke / "units" / "fields.json")["metrics"]
    b = read_json(copy / "units" / "fields.json")["metrics"]
    assert [(m["seed"], m["arm"], m["width"]) for m in a["acc"]] == [
        (m["seed"], m["arm"], m["width"]) for m in b["acc"]
    ]
    for x, y in zip(a["acc"], b["acc"], strict=True):
        assert x["acc"] == pytest.approx(y["acc"], abs=0.02)
    for key, curve in a["curves"].items():
        assert curve == pytest.approx(b["curves"][key], rel=1e-4)
    sa, sb = read_json(smoke / "summary.json"), read_json(copy / "summary.json")
    assert [r for r in sa["rows"] if r["arm"] in ("reference", "scratch", "truncation")] == [
        r for r in sb["rows"] if r["arm"] in ("reference", "scratch", "truncation")
    ]


def test_bad_input_writes_nothing(tmp_path, cli):
    with pytest.raises(
        ConfigError,
        match=r"--eval-widths has width 40, outside the weight field's training range 8\.\.32",
    ):
        NeuMetaConfig(eval_widths="8,40")
    with pytest.raises(ConfigError, match=r"--claim-width has width 4, outside .* 8\.\.32"):
        NeuMetaConfig(claim_width=4)
    with pytest.raises(ConfigError, match="comma-separated"):
        NeuMetaConfig(train_widths="8;16")
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="--field-batch-size"):
        run_recipe("neumeta", make_config("neumeta", smoke=True, field_batch_size=100000), out=out)
    assert not out.exists()
    rc, _, err = cli("run", "neumeta", "--smoke", "--eval-widths", "8,64", "--out", "r")
    assert rc == 2 and "outside the weight field's training range 8..12" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def _rows(acc: dict, seeds=(0, 1, 2), diverged=False) -> list[dict]:
    rows = []
    for arm in ARMS:
        w = 32 if arm == "reference" else 11
        vals = acc.get(arm, [50.0, 50.0, 50.0])
        rows.append(
            {
                "arm": arm,
                "width": w,
                "acc_values": vals,
                "acc_mean": sum(vals) / len(vals),
                "seeds": list(seeds),
                "excluded": ["reference w=32 seed 0"] if diverged and arm == "reference" else [],
            }
        )
    return rows


def test_claim_logic():
    check = NeuMeta.check_claims
    ref = [50.0, 52.0, 48.0]
    good = {
        "reference": ref,
        "smoothed": [49.5, 51.2, 47.6],
        "unsmoothed": [40.0, 41.0, 39.0],
        "truncation": [20.0, 22.0, 18.0],
    }
    a, b = check(_rows(good), 11, chance=10.0)
    assert a.held is True and b.held is True
    assert "CI [" in a.detail and "differs" in a.detail
    # a sample 3 pt below the reference: (a) fails
    a, _ = check(_rows({**good, "smoothed": [47.0, 49.0, 45.0]}), 11, chance=10.0)
    assert a.held is False and a.evidence["mean_difference"] == pytest.approx(-3.0)
    # a noisy difference whose CI reaches below -2 fails even with a mean near 0
    a, _ = check(_rows({**good, "smoothed": [54.0, 48.0, 48.0]}), 11, chance=10.0)
    assert a.held is False and a.evidence["ci_low"] < -2
    # truncation within 2 pt of the reference: the control does not differ
    a, _ = check(_rows({**good, "truncation": [49.0, 51.0, 47.0]}), 11, chance=10.0)
    assert a.held is False and "does NOT differ" in a.detail
    # smoothed only 4 pt above unsmoothed: (b) fails
    _, b = check(_rows({**good, "unsmoothed": [45.5, 47.2, 43.6]}), 11, chance=10.0)
    assert b.held is False and b.evidence["diff_pts"] == pytest.approx(4.0)
    # a reference at chance, or a diverged one: neither is tested
    a, b = check(_rows({**good, "reference": [12.0, 12.0, 12.0]}), 11, chance=10.0)
    assert a.held is None and b.held is None and "did not learn" in a.detail
    a, b = check(_rows(good, diverged=True), 11, chance=10.0)
    assert a.held is None and "diverged" in b.detail
