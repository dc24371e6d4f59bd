"""loldu recipe [#3]: the smoke run end to end (resumes to the same summary), parameter
counts from layer shapes (hand-computed), the claim logic on hand-made task summaries, and
one-line config errors."""

from __future__ import annotations

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.adapters.finetune import load_task
from weightlab.recipes.adapters.loldu import LoLDUConfig, LoLDURecipe, layer_counts
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.recipes.stats import mean_std
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


SHIFT = {"tasks": "mnist1d_shift", "data": "mnist1d_shift"}


def _check_run(out, summary, tasks):
    assert sorted(summary["tasks"]) == sorted(tasks)
    ids = [c["id"] for c in summary["claims"]]
    assert ids == [f"{c} {t}" for t in tasks for c in "ab"]  # in --tasks order
    for c in summary["claims"]:
        assert c["verdict"] in ("held", "did not hold", "not tested") and c["detail"]
    for t in summary["tasks"].values():
        by = {r["arm"]: r for r in t["rows"]}
        # measured on the model = computed from the layer shapes; the head counts apart
        assert by["loldu"]["trainable_body"] == t["counts"]["loldu"]
        assert by["lora"]["trainable_body"] == t["counts"]["lora"]
        assert by["head"]["trainable_body"] == 0
        assert len(by["loldu"]["grid"]) >= 1 and len(by["lora"]["test_values"]) == 2
    assert (out / "report.html").exists() and (out / "loldu.png").exists()
    assert "every lr grid point" in (out / "report.md").read_text()


def _resumes(out, cfg):
    before = (out / "summary.json").read_bytes()
    (out / "summary.json").unlink()
    run_recipe("loldu", cfg, out=out)
    assert read_json(out / "timing.json")["computed_units"] == []
    assert (out / "summary.json").read_bytes() == before


def test_smoke_run_one_task_writes_claims_report_figure_and_resumes(tmp_path):
    cfg = make_config("loldu", smoke=True, **SHIFT)
    _, summary = run_recipe("loldu", cfg, out=tmp_path / "run")
    _check_run(tmp_path / "run", summary, ["mnist1d_shift"])
    _resumes(tmp_path / "run", cfg)


@pytest.mark.slow(reason="imports transformers and builds the tiny BERT task (~10 s CPU cold)")
def test_smoke_run_both_tasks_end_to_end(tmp_path):
    cfg = make_config("loldu", smoke=True)
    _, summary = run_recipe("loldu", cfg, out=tmp_path / "run")
    _check_run(tmp_path / "run", summary, ["vader_words", "mnist1d_shift"])
    # tiny BERT: 12 Linears (8 of 32x32, 32->64, 64->32 twice), by hand
    assert summary["tasks"]["vader_words"]["counts"] == {
        "layers": 12,
        "loldu": 12 * 9,
        "loldu_full_rank": 12 * 33,
        "lora": 8 * 8 * 64 + 4 * 8 * 96,
    }
    _resumes(tmp_path / "run", cfg)


def test_layer_counts_from_shapes_by_hand():
    # MLP 40-32-32-10: hidden Linears 40->32 and 32->32
    shift = load_task("mnist1d_shift", None, hidden=32, pretrain_epochs=1)
    c = layer_counts(shift, 8)
    assert c == {
        "layers": 2,
        "loldu": 2 * 9,
        "loldu_full_rank": (32 + 1) + (32 + 1),
        "lora": 8 * (40 + 32) + 8 * (32 + 32),
    }


def _row(arm, tests, diverged=()):
    m, s = mean_std(tests)
    return {
        "arm": arm,
        "seeds": list(range(len(tests))),
        "test_values": list(tests),
        "test_mean": m,
        "test_std": s,
        "diverged": list(diverged),
    }


def _task(head, loldu, lora, metric="r2", ref=None, diverged=()):
    return {
        "metric": metric,
        "chance_pct": None if metric == "r2" else 10.6,
        "reference": ref or {"a_test_acc": 61.0, "b_test_acc_before": 21.0},
        "rows": [_row("head", head), _row("loldu", loldu, diverged=diverged), _row("lora", lora)],
    }


def test_claims_held():
    # LoLDU within ±3 of LoRA on every seed (tight CI), head far below
    t = _task([50.0, 51.0, 52.0], [65.0, 66.5, 67.0], [66.0, 67.0, 68.0])
    a, b = LoLDURecipe.check_claims("vader_words", t)
    assert (a.held, b.held) == (True, True)
    assert a.evidence["control"]["differs"] and a.evidence["seed_mean_gap"] == pytest.approx(
        -0.8333, abs=1e-3
    )
    assert b.evidence["gain"] == pytest.approx(15.1667, abs=1e-3)


def test_claims_did_not_hold():
    # the measured gap: LoLDU 12 points below LoRA, 4 above head-only
    t = _task([51.0, 52.0, 53.0], [55.0, 56.0, 57.0], [67.0, 68.0, 69.0])
    a, b = LoLDURecipe.check_claims("vader_words", t)
    assert a.held is False and "gap -12.00" in a.detail
    assert b.held is True
    # LoLDU above head-only by less than the seed spread
    t = _task([50.0, 55.0, 60.0], [53.0, 55.0, 60.0], [55.0, 56.0, 57.0])
    _, b = LoLDURecipe.check_claims("vader_words", t)
    assert b.held is False and b.evidence["spread"] == pytest.approx(5.0)
    # close to LoRA, but the control (head-only) is within the margin too: the test is blind
    t = _task([64.0, 65.0, 66.0], [65.0, 66.0, 67.0], [65.5, 66.5, 67.5])
    a, _ = LoLDURecipe.check_claims("vader_words", t)
    assert a.held is False and "does NOT differ" in a.detail


def test_claims_not_tested():
    # LoRA R² 0.05 < claims.MIN_R2: the task did not learn
    t = _task([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [4.0, 5.0, 6.0])
    assert [c.held for c in LoLDURecipe.check_claims("vader_words", t)] == [None, None]
    # a diverged LoLDU seed
    t = _task([50.0, 51.0, 52.0], [65.0, 66.5, 67.0], [66.0, 67.0, 68.0], diverged=["loldu 1"])
    cs = LoLDURecipe.check_claims("vader_words", t)
    assert [c.held for c in cs] == [None, None] and "diverged" in cs[0].detail
    # mnist1d_shift: accuracy 15% on B is not 10 points above chance 10.6% ...
    t = _task([20.0, 21.0, 22.0], [14.0, 15.0, 16.0], [14.0, 15.0, 16.0], metric="acc")
    assert [c.held for c in LoLDURecipe.check_claims("mnist1d_shift", t)] == [None, None]
    # ... and a shift too mild (B 40% >= half of A 61%)
    ref = {"a_test_acc": 61.0, "b_test_acc_before": 40.0}
    t = _task([25.0, 26.0, 27.0], [30.0, 31.0, 32.0], [31.0, 32.0, 33.0], "acc", ref)
    cs = LoLDURecipe.check_claims("mnist1d_shift", t)
    assert [c.held for c in cs] == [None, None] and "too mild" in cs[0].detail
    # one seed: no spread, no CI
    t = _task([50.0], [65.0], [66.0])
    assert [c.held for c in LoLDURecipe.check_claims("vader_words", t)] == [None, None]


def test_bad_config_is_one_line():
    with pytest.raises(ConfigError, match="unknown task 'cifar'"):
        LoLDUConfig(tasks="vader_words,cifar")
    with pytest.raises(ConfigError, match="repeats"):
        LoLDUConfig(tasks="mnist1d_shift,mnist1d_shift", data="mnist1d_shift")
    with pytest.raises(ConfigError, match="--data vader_words: not among --tasks"):
        LoLDUConfig(tasks="mnist1d_shift")
    with pytest.raises(ConfigError, match="--vader-loldu-lrs"):
        LoLDUConfig(vader_loldu_lrs="1e-2,-1")
    with pytest.raises(ConfigError, match="--shift-lora-lrs"):
        LoLDUConfig(shift_lora_lrs="fast")
    with pytest.raises(ConfigError, match="--vader-model"):
        LoLDUConfig(vader_model="bert-large")
    cfg = LoLDUConfig(tasks="mnist1d_shift", data="mnist1d_shift", steps=1000, batch_size=16)
    with pytest.raises(ConfigError, match="exceeds the 3500 training examples"):
        LoLDURecipe().validate(cfg, {"train": 3500, "val": 1000, "test": 1000})
