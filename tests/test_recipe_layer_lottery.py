"""The layer-lottery recipe: smoke run end to end (units, resume, report), bad input, and
the claim checks on hand-made rows."""

from __future__ import annotations

import json

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.recipes.sparsity.layer_lottery import (
    BEAT_RANDOM_PTS,
    MATCH_PTS,
    NEURON_GAP_PTS,
    LayerLottery,
)
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, weightlab_cache):
    out = tmp_path_factory.mktemp("layer-lottery") / "run"
    path, summary = run_recipe("layer-lottery", make_config("layer-lottery", smoke=True), out=out)
    return path, summary


def test_smoke_run_units_claims_and_resume(smoke):
    path, summary = smoke
    assert [r["arm"] for r in summary["rows"]] == ["dense", "layer", "random", "neuron"]
    assert summary["members"] == 8  # 2 seeds x 4 arms
    for b in summary["blocks"]:  # smoke: 4 blocks, 2 removed
        assert len(b["scores"]) == 4 and len(b["layer"]) == 2 and len(b["random"]) == 2
        lowest = sorted(range(4), key=lambda i: b["scores"][i])[:2]
        assert b["layer"] == sorted(lowest)
    rows = {r["arm"]: r for r in summary["rows"]}
    # the layer ticket is a smaller model; the neuron ticket matches its FLOPs
    assert rows["layer"]["params"] < rows["dense"]["params"]
    assert rows["neuron"]["flops_per_example"] == rows["layer"]["flops_per_example"]
    assert rows["random"]["flops_per_example"] == rows["layer"]["flops_per_example"]
    # timings are machine-dependent: in timing.json and the report, never in the summary
    assert "time_ms_per_step" not in summary
    measured = read_json(path / "timing.json")["measurements"]
    assert [r[0] for r in measured[0]["rows"]] == ["dense", "layer", "random", "neuron"]
    assert "measured on this machine" in (path / "report.md").read_text()
    assert [c["id"] for c in summary["claims"]] == ["a", "b", "c"]
    assert summary["reduced"].startswith("width 32 instead of 256")  # the run's own width
    units = sorted(p.name for p in (path / "units").glob("*.json"))
    assert units == ["dense.json", "neuron.json", "removed.json", "scores.json", "timing.json"]
    before = (path / "summary.json").read_bytes()
    run_recipe("layer-lottery", make_config("layer-lottery", smoke=True), out=path)
    assert (path / "summary.json").read_bytes() == before
    assert read_json(path / "timing.json")["computed_units"] == []
    assert read_json(path / "timing.json")["measurements"] == measured  # from the unit
    assert (path / "layer_lottery.png").exists() or list(path.glob("*.png"))


@pytest.mark.slow
def test_smoke_run_is_deterministic(smoke, tmp_path):
    _, first = smoke
    _, second = run_recipe(
        "layer-lottery", make_config("layer-lottery", smoke=True), out=tmp_path / "again"
    )
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def test_bad_config_is_one_line():
    with pytest.raises(ConfigError, match="--remove 8 would remove every one"):
        make_config("layer-lottery", remove=8)
    with pytest.raises(ConfigError, match="score-batch"):
        LayerLottery().validate(make_config("layer-lottery", score_batch=5000), {"train": 3500})


def _rows(dense, layer, random, neuron, diverged=()):
    out = []
    for arm, acc in (("dense", dense), ("layer", layer), ("random", random), ("neuron", neuron)):
        out.append(
            {
                "arm": arm,
                "test_acc_mean": acc,
                "diverged": [d for d in diverged if d.startswith(arm)],
            }
        )
    return out


def _verdicts(rows, chance=10.0):
    return [c.verdict for c in LayerLottery.check_claims(rows, chance)]


def test_claims_on_hand_made_rows():
    assert _verdicts(_rows(60.0, 59.5, 58.0, 57.0)) == ["held", "held", "held"]
    # (a) exactly at the tolerance holds, just past it does not
    assert _verdicts(_rows(60.0, 60.0 - MATCH_PTS, 50.0, 50.0))[0] == "held"
    assert _verdicts(_rows(60.0, 60.0 - MATCH_PTS - 0.01, 50.0, 50.0))[0] == "did not hold"
    # (b) needs a lead of BEAT_RANDOM_PTS over random removal
    assert _verdicts(_rows(60.0, 60.0, 60.0 - BEAT_RANDOM_PTS + 0.1, 50.0))[1] == "did not hold"
    # (c) the neuron ticket must be strictly more than NEURON_GAP_PTS below dense
    assert _verdicts(_rows(60.0, 60.0, 50.0, 60.0 - NEURON_GAP_PTS))[2] == "did not hold"
    assert _verdicts(_rows(60.0, 60.0, 50.0, 58.9))[2] == "held"


def test_claims_not_tested_without_a_learned_baseline_or_with_divergence():
    assert _verdicts(_rows(15.0, 15.0, 10.0, 5.0)) == ["not tested"] * 3
    v = _verdicts(_rows(60.0, 60.0, 50.0, 50.0, diverged=["neuron seed 1"]))
    assert v == ["held", "held", "not tested"]
