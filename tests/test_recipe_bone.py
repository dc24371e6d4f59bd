"""bone recipe: the smoke run end to end, resume, the claim logic on hand-made task blocks,
the step-time measurement and bad configs."""

from __future__ import annotations

import math

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.adapters.bone import (
    LAST_STEPS,
    TIE_MARGIN,
    BoneConfig,
    BoneRecipe,
    _last,
    _step_ms,
)
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("bone") / "run"
        recipe_path, summary = run_recipe("bone", make_config("bone", smoke=True), out=out)
    finally:
        torch.set_num_threads(before)
    return recipe_path, summary, read_json(out / "timing.json")


def test_smoke_run_writes_both_tasks_claims_report_and_figure(smoke):
    path, summary, timing = smoke
    assert [c["id"] for c in summary["claims"]] == ["a vader_words", "a mnist1d_shift"]
    for c in summary["claims"]:
        assert c["verdict"] in ("held", "did not hold", "not tested") and c["quote"]
    assert (path / "report.html").exists() and (path / "bone_loss_curves.png").exists()
    for block in summary["tasks"]:
        arms = {a["arm"]: a for a in block["arms"]}
        assert set(arms) == {"bone", "lora", "pissa"}
        # the smoke sizes match Bone and LoRA exactly: tiny BERT r 16 vs 8, MLP 40-40-40 r 8 vs 4
        assert arms["bone"]["trainable_body"] == arms["lora"]["trainable_body"]
        assert arms["lora"]["trainable_body"] == arms["pissa"]["trainable_body"]
        assert all(len(c["mean"]) == summary["setup"]["steps"] for c in block["curves"])
        assert all(a["n"] == 2 for a in block["arms"])
    # machine-dependent numbers only in timing.json, one row per task x arm, finite step times
    rows = timing["measurements"][0]["rows"]
    assert len(rows) == 6 and all(math.isfinite(float(r[2])) for r in rows)
    assert "step_stamps" not in (path / "summary.json").read_text()


def test_resume_after_deleting_the_summary_gives_the_same_summary(tmp_path):
    cfg = make_config("bone", smoke=True, tasks="mnist1d_shift")
    out = tmp_path / "run"
    _, first = run_recipe("bone", cfg, out=out)
    (out / "summary.json").unlink()
    _, again = run_recipe("bone", cfg, out=out)
    assert again == first
    assert read_json(out / "timing.json")["computed_units"] == []


def _arm(arm, final, n_body, test=50.0, diverged=(), finals=None):
    finals = finals or [final] * 3
    return {
        "arm": arm,
        "rank": 8,
        "alpha": None if arm == "bone" else 8,
        "layers": 2,
        "trainable_body": n_body,
        "trainable_head": 10,
        "lr": 1e-3,
        "grid": [],
        "final_mean": final,
        "final_std": 0.01,
        "final_values": finals,
        "test_mean": test,
        "test_std": 1.0,
        "test_values": [test] * 3,
        "diverged": list(diverged),
        "n": 3,
    }


def _block(task="vader_words", bone=1.0, lora=1.0, pissa=1.1, n_bone=4096, test=60.0, **kw):
    reference = {"a_test_acc": kw.get("a_acc", 60.0), "b_test_acc_before": kw.get("b_acc", 20.0)}
    return {
        "task": task,
        "metric": "r2" if task == "vader_words" else "acc",
        "reference": reference,
        "chance_pct": None if task == "vader_words" else 10.0,
        "arms": [
            _arm("bone", bone, n_bone, diverged=kw.get("bone_div", ())),
            _arm("lora", lora, 4040, test=test),
            _arm("pissa", pissa, 4040),
        ],
        "curves": [{"arm": a, "mean": [1.0] * 100, "std": [0.0] * 100} for a in ("bone", "lora")],
        "diverged": [],
    }


def test_claim_holds_within_the_tie_margin_and_fails_beyond_it():
    (c,) = BoneRecipe.check_claims(_block(bone=1.0 + TIE_MARGIN - 1e-6, lora=1.0))
    assert c.held is True and c.id == "a vader_words"
    assert c.evidence["ratio_bone_lora"] == pytest.approx(1.02, abs=1e-5)
    # PiSSA is reported beside it, not judged
    assert c.evidence["bone_le_pissa_within_margin"] is True and "PiSSA" in c.detail
    (c,) = BoneRecipe.check_claims(_block(bone=1.03, lora=1.0, pissa=0.5))
    assert c.held is False and c.evidence["bone_le_pissa_within_margin"] is False
    (c,) = BoneRecipe.check_claims(_block("mnist1d_shift", bone=0.8, lora=1.0, test=40.0))
    assert c.held is True and c.id == "a mnist1d_shift"


def test_claim_not_tested_on_failed_preconditions():
    (c,) = BoneRecipe.check_claims(_block(bone_div=["vader_words bone seed 1"]))
    assert c.held is None and "diverged" in c.detail
    (c,) = BoneRecipe.check_claims(_block(test=5.0))  # LoRA R² 0.05 < MIN_R2
    assert c.held is None and "did not learn" in c.detail
    (c,) = BoneRecipe.check_claims(_block("mnist1d_shift", test=15.0))  # chance 10%
    assert c.held is None and "did not learn" in c.detail
    (c,) = BoneRecipe.check_claims(_block(n_bone=8192))
    assert c.held is None and "not matched" in c.detail
    (c,) = BoneRecipe.check_claims(_block("mnist1d_shift", test=40.0, b_acc=35.0))
    assert c.held is None and "too mild" in c.detail


def test_last_steps_loss_and_step_time():
    losses = [5.0] * 90 + [1.0, 2.0] * 5
    assert _last(losses) == pytest.approx(1.5) and LAST_STEPS == 10
    rec = {"info": {"timing": {"step_stamps": [0.0, 0.1, 0.3, 0.4, 0.5]}}}
    assert _step_ms(rec) == pytest.approx(100.0)
    assert math.isnan(_step_ms({"info": {}}))


def test_bad_configs_are_one_line_errors():
    recipe, sizes = BoneRecipe(), {"train": 3500, "val": 500, "test": 1000}
    with pytest.raises(ConfigError, match="shift-bone-rank 16 does not divide"):
        recipe.validate(BoneConfig(shift_bone_rank=16), sizes)
    with pytest.raises(ConfigError, match="vader-bone-rank 7"):
        recipe.validate(BoneConfig(vader_bone_rank=7), sizes)
    with pytest.raises(ConfigError, match="--tasks"):
        recipe.validate(BoneConfig(tasks="vader_words,cifar"), sizes)
    with pytest.raises(ConfigError, match="--vader-lrs"):
        recipe.validate(BoneConfig(vader_lrs="1e-3,fast"), sizes)
    with pytest.raises(ConfigError, match="--shift-lrs"):
        recipe.validate(BoneConfig(shift_lrs="-1"), sizes)
    with pytest.raises(ConfigError, match="exceeds the 3500"):
        recipe.validate(BoneConfig(steps=200, shift_batch_size=32), sizes)
    with pytest.raises(ConfigError, match="VADER training words"):
        recipe.validate(BoneConfig(tasks="vader_words", steps=300, batch_size=16), sizes)
    with pytest.raises(ConfigError, match="lora-rank"):
        recipe.validate(BoneConfig(shift_lora_rank=40, hidden=32, shift_bone_rank=8), sizes)
    recipe.validate(BoneConfig(), sizes)  # the defaults pass
