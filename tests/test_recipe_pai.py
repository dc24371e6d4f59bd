"""The pruning-at-init recipe: a smoke run's outputs and masks, determinism, resume of a
lost unit, bad input, and the claim logic on hand-made rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.recipes.sparsity.pruning_at_init import (
    CONTROL_DENSITY,
    MATCH_DENSITY,
    PruningAtInit,
)
from weightlab.runs import load_tensors, read_json

pytestmark = pytest.mark.usefixtures("one_thread")

SCORES = ("snip", "grasp", "synflow", "magnitude", "random")
TOTAL = 40 * 64 + 64 * 32 + 32 * 10  # smoke MLP 40-64-32-10


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    import torch as _t

    before = _t.get_num_threads()
    _t.set_num_threads(1)
    out = tmp_path_factory.mktemp("pai") / "run"
    run_recipe("pruning-at-init", make_config("pruning-at-init", smoke=True), out=out)
    _t.set_num_threads(before)
    return out


def test_smoke_run_outputs_masks_and_collapse(smoke):
    files = sorted(str(p.relative_to(smoke)) for p in smoke.rglob("*") if p.is_file())
    assert "accuracy_vs_density.png" in files and "report.html" in files
    assert sorted(p.stem for p in (smoke / "units").glob("*.json")) == [
        "dense",
        "density-1",
        "density-10",
    ]
    s = read_json(smoke / "summary.json")
    assert [(r["score"], r["density"]) for r in s["rows"]] == [("dense", 1.0)] + [
        (sc, d) for d in (0.1, 0.01) for sc in SCORES
    ]
    assert s["members"] == 2 + 2 * 5 * 2
    for r in s["rows"]:
        assert r["n"] == 2 and len(r["test_acc_values"]) == 2
    lines = [json.loads(x) for x in (smoke / "metrics.jsonl").read_text().splitlines()]
    for line in lines[1:]:
        d = line["members"][0]["target_density"]
        t = load_tensors(smoke / "units" / f"{line['unit']}.safetensors")
        for m in line["members"]:
            masks = {
                k.split(".", 2)[2]: v
                for k, v in t.items()
                if k.startswith(f"{m['score']}.{m['seed']}.")
            }
            assert len(masks) == 3 and all(v.dtype == torch.bool for v in masks.values())
            kept = sum(int(v.sum()) for v in masks.values())
            assert kept == round(d * TOTAL)  # exact global count
            assert m["density"] == pytest.approx(kept / TOTAL)
            c = m["collapse"]
            assert c["chain"] is True and set(c["kept"]) == set(masks)
            assert c["collapsed"] == (bool(c["empty"]) or c["path"] is False)
        # scores pick different masks from the same init
        a = t["snip.0.layers.0.weight"]
        assert not torch.equal(a, t["random.0.layers.0.weight"])
    assert [c["id"] for c in s["claims"]] == ["a"]
    assert "sparsely training a randomly pruned network" in s["claims"][0]["quote"]


def test_same_config_twice_is_identical_and_a_lost_unit_is_recomputed_alone(smoke, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(smoke, copy)
    (copy / "units" / "density-1.json").unlink()
    run_recipe("pruning-at-init", make_config("pruning-at-init", smoke=True), out=copy)
    assert read_json(copy / "timing.json")["computed_units"] == ["density-1"]
    assert (copy / "summary.json").read_bytes() == (smoke / "summary.json").read_bytes()
    a = load_tensors(copy / "units" / "density-1.safetensors")
    b = load_tensors(smoke / "units" / "density-1.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"scores": "snip,foo"}, "unknown score 'foo'"),
        ({"densities": "10,0"}, r"percentages in \(0, 100\]"),
        ({"densities": "10,120"}, r"percentages in \(0, 100\]"),
        ({"allocation": "local"}, "allocation"),
        ({"hidden": "64,x"}, "hidden"),
    ],
)
def test_bad_config_is_a_one_line_error(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_config("pruning-at-init", smoke=True, **override)
    assert "\n" not in str(e.value)


# -- claim logic on hand-made rows ---------------------------------------------------------

CHANCE = 10.0


def _row(score, density, accs, excluded=()):
    return {
        "score": score,
        "density": density,
        "test_acc_mean": sum(accs) / len(accs),
        "test_acc_values": list(accs),
        "seeds": list(range(len(accs))),
        "excluded": list(excluded),
    }


def _claim(dense, r10, r1, **kw):
    rows = [
        _row("dense", 1.0, dense, kw.get("dense_excluded", ())),
        _row("random", MATCH_DENSITY, r10),
        _row("random", CONTROL_DENSITY, r1),
    ]
    return PruningAtInit.check_claims(rows, CHANCE)[0]


def test_claim_held_did_not_hold_and_not_tested():
    held = _claim([80.0, 81.0, 82.0], [79.5, 80.0, 81.2], [60.0, 61.0, 62.0])
    assert held.verdict == "held"
    assert held.evidence["ci_low"] >= -2 and held.evidence["pairs"] == 3
    # mean within 2 pts, but the seeds disagree too much: CI reaches below -2
    wide = _claim([80.0, 81.0, 82.0], [83.0, 76.0, 81.0], [60.0, 61.0, 62.0])
    assert wide.verdict == "did not hold" and wide.evidence["ci_low"] < -2
    far = _claim([80.0, 81.0, 82.0], [70.0, 71.0, 72.0], [60.0, 61.0, 62.0])
    assert far.verdict == "did not hold"
    # positive control fails: random at 1% within 2 pts of dense -> not tested
    ctl = _claim([80.0, 81.0, 82.0], [79.5, 80.0, 81.2], [80.0, 80.0, 79.5])
    assert ctl.verdict == "not tested" and "positive control" in ctl.detail
    # dense at chance
    flat = _claim([12.0, 11.0, 13.0], [12.0, 11.0, 13.0], [10.0, 10.0, 10.0])
    assert flat.verdict == "not tested" and "did not learn" in flat.detail
    # a diverged member read by the claim
    div = _claim([80.0, 81.0], [80.0, 81.0], [60.0, 61.0], dense_excluded=["dense seed 2"])
    assert div.verdict == "not tested" and "diverged" in div.detail
    # densities missing from the run
    rows = [_row("dense", 1.0, [80.0, 81.0]), _row("random", 0.05, [70.0, 71.0])]
    assert PruningAtInit.check_claims(rows, CHANCE)[0].verdict == "not tested"
