"""The adapter recipes' fine-tuning harness: tasks, arms, lr grid by seed 0's validation."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from weightlab.adapters import add_adapters
from weightlab.errors import ConfigError
from weightlab.recipes.adapters.finetune import (
    Arm,
    Finetuner,
    best_lr,
    finetune,
    load_task,
    run_arms,
    subset,
)
from weightlab.runs.rundir import RunDir


@pytest.fixture(scope="module")
def vader():
    return load_task("vader_words", None, smoke=True)


@pytest.fixture(scope="module")
def shift():
    return load_task("mnist1d_shift", None, hidden=32, pretrain_epochs=2)


def _lora(body, seed, task):
    return {"n": add_adapters(body, task.select, rank=4, seed=seed).num_trainable()}


def test_vader_task_body_head_and_reference(vader):
    m = vader.make(0)
    assert all(not p.requires_grad for p in m.body.parameters())
    assert all(p.requires_grad for p in m.head.parameters())
    assert vader.metric == "r2" and "ridge_test_r2" in vader.reference
    # a fresh body per call: adapting one leaves the next untouched
    add_adapters(m.body, vader.select, rank=4)
    assert not any("lora" in n for n, _ in vader.make(0).named_parameters())


def test_bucketed_evaluation_equals_the_plain_forward(vader):
    m = vader.make(0).eval()
    x = vader.data.val.x[:700]
    with torch.no_grad():
        torch.testing.assert_close(m(x), m.head(m.body(x)), atol=1e-5, rtol=1e-5)


def test_finetune_records_every_step_and_trains_only_adapters_and_head(vader):
    head_only = finetune(vader, None, lr=1e-3, seed=0, steps=5, batch_size=8, data_seed=1)
    lora = finetune(vader, _lora, lr=1e-3, seed=0, steps=5, batch_size=8, data_seed=1)
    assert len(head_only["losses"]) == len(lora["losses"]) == 5
    assert head_only["trainable_body"] == 0 and lora["trainable_body"] == lora["info"]["n"] > 0
    assert head_only["losses"][0] == pytest.approx(lora["losses"][0], rel=1e-5)  # B = 0 at start
    again = finetune(vader, _lora, lr=1e-3, seed=0, steps=5, batch_size=8, data_seed=1)
    assert again == lora


def test_mnist1d_shift_task_adapts_the_hidden_layers_and_learns(shift):
    assert shift.metric == "acc" and shift.reference["b_test_acc_before"] >= 0
    rec = finetune(shift, _lora, lr=1e-2, seed=0, steps=40, batch_size=32, data_seed=0)
    assert rec["trainable_body"] == 4 * (40 + 32) + 4 * (32 + 32)
    assert rec["trainable_head"] == 32 * 10 + 10
    assert sum(rec["losses"][-10:]) < sum(rec["losses"][:10])


def test_subset_refuses_more_examples_than_the_split(shift):
    with pytest.raises(ConfigError, match="exceeds"):
        subset(shift.data, len(shift.data.train) + 1, 0)


def test_best_lr_skips_diverged_runs():
    recs = [
        {"lr": 1.0, "val": None, "diverged": True},
        {"lr": 0.1, "val": 50.0, "diverged": False},
        {"lr": 0.01, "val": 60.0, "diverged": False},
    ]
    assert best_lr(recs) == 0.01
    assert best_lr(recs[:1]) == 1.0


@dataclass(frozen=True)
class _Cfg:
    x: int = 1


def test_run_arms_grids_on_seed_zero_then_resumes(shift, tmp_path):
    arms = [Arm("head", None, (1e-3, 1e-2)), Arm("lora", _lora, (1e-2,))]
    rd = RunDir(tmp_path / "r", "t", _Cfg()).open()
    out = run_arms(rd, "t", shift, arms, seeds=2, steps=10, batch_size=16)
    assert [r["lr"] for r in out["head"]["grid"]] == [1e-3, 1e-2]
    assert out["head"]["lr"] == best_lr(out["head"]["grid"])
    assert [r["seed"] for r in out["lora"]["seeds"]] == [0, 1]
    # same seed -> same examples in the same order for every arm: same first-step input loss
    assert len(rd.computed) == 5
    rd2 = RunDir(tmp_path / "r", "t", _Cfg()).open()
    again = run_arms(rd2, "t", shift, arms, seeds=2, steps=10, batch_size=16)
    assert rd2.computed == [] and again == out


def test_finetuner_plain_inputs_pass_straight_through():
    m = Finetuner(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    x = torch.randn(300, 3)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m.head(m.body(x)))
