"""The continual-hypernet recipe: the split task, a smoke run's outputs, resume of a lost
unit, bad input before anything is written, and the claim logic on hand-made rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.recipes.growth.continual_hypernet import (
    ContinualHypernet,
    split_tasks,
    stack_orders,
    task_order,
)
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ch") / "run"
    run_recipe("continual-hypernet", make_config("continual-hypernet", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_split_tasks_relabel_and_normalize_with_train_statistics():
    data = load_dataset("digits", "cpu")
    tasks = split_tasks(data)
    assert len(tasks) == 5
    mu, sd = data.train.x.mean(0), data.train.x.std(0)
    for t, task in enumerate(tasks):
        keep = (data.train.y == 2 * t) | (data.train.y == 2 * t + 1)
        assert task.num_classes == 2 and set(task.test.y.tolist()) == {0, 1}
        torch.testing.assert_close(task.train.x, (data.train.x[keep] - mu) / (sd + 0.1))
        torch.testing.assert_close(task.train.y, data.train.y[keep] - 2 * t)
    assert sum(len(t.test) for t in tasks) == len(data.test)


def test_stacked_orders_give_each_member_its_own_batches():
    task = split_tasks(load_dataset("digits", "cpu"))[1]
    orders = [task_order(len(task.train), 32, 10, s) for s in (1, 2)]
    assert orders[0].shape == (10, 32) and not torch.equal(orders[0], orders[1])
    stacked, seq = stack_orders(task, orders)
    assert stacked.train.x.shape == (320, 2, 64) and len(stacked.test) == 0
    step3 = seq[3]
    torch.testing.assert_close(stacked.train.x[step3, 1], task.train.x[orders[1][3]])
    torch.testing.assert_close(stacked.train.y[step3, 0], task.train.y[orders[0][3]])


def test_smoke_run_outputs(smoke):
    assert (smoke / "continual_accuracy.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.stem for p in (smoke / "units").glob("*.json")) == ["finetune", "mlp", "rnn"]
    s = read_json(smoke / "summary.json")
    assert [r["arm"] for r in s["rows"]] == ["mlp", "rnn", "finetune"]
    by = {r["arm"]: r for r in s["rows"]}
    assert by["mlp"]["parameters"] == 28_908 and by["rnn"]["parameters"] == 28_444
    assert s["members"] == 6 and all(50 <= c < 60 for c in s["chance_pct"])
    for r in s["rows"]:
        assert len(r["per_task_final"]) == 5 and r["n"] == 2
    c = {x["id"]: x for x in s["claims"]}
    assert set(c) == {"a", "b"}
    assert "RNN hypernetworks outperformed" in c["b"]["quote"]


def test_lost_unit_is_recomputed_alone_and_identically(smoke, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(smoke, copy)
    (copy / "units" / "rnn.json").unlink()
    run_recipe("continual-hypernet", make_config("continual-hypernet", smoke=True), out=copy)
    assert read_json(copy / "timing.json")["computed_units"] == ["rnn"]
    assert (copy / "summary.json").read_bytes() == (smoke / "summary.json").read_bytes()


def test_bad_input_fails_before_anything_is_written(tmp_path):
    out = tmp_path / "bad"
    cfg = make_config("continual-hypernet", batch_size=5000)
    with pytest.raises(ConfigError, match="batch-size 5000 exceeds"):
        run_recipe("continual-hypernet", cfg, out=out)
    assert not out.exists()
    with pytest.raises(ConfigError, match="--beta"):
        make_config("continual-hypernet", beta=-1.0)


def _row(arm, final, just=(99.0,) * 5, excluded=()):
    return {"arm": arm, "final_mean": final, "just_trained": list(just), "excluded": list(excluded)}


def test_claims_on_hand_made_rows():
    chance = [50.0] * 5
    rows = [_row("mlp", 98.1), _row("rnn", 96.1), _row("finetune", 95.7)]
    a, b = ContinualHypernet.check_claims(rows, chance)
    assert a.verdict == "did not hold"  # RNN +0.4 < +2
    assert b.verdict == "did not hold" and b.evidence["rnn_minus_mlp"] == pytest.approx(-2.0)
    rows = [_row("mlp", 98.0), _row("rnn", 98.5), _row("finetune", 96.0)]
    a, b = ContinualHypernet.check_claims(rows, chance)
    assert a.verdict == "held" and b.verdict == "held"
    rows[1]["final_mean"] = 98.4  # RNN +0.4 over MLP: (b) fails, (a) still holds
    a, b = ContinualHypernet.check_claims(rows, chance)
    assert a.verdict == "held" and b.verdict == "did not hold"
    rows = [_row("mlp", 98.0), _row("rnn", 99.0), _row("finetune", 55.0, just=(55.0,) * 5)]
    a, b = ContinualHypernet.check_claims(rows, chance)
    assert a.verdict == b.verdict == "not tested" and "fine-tuning task 0" in a.detail
    rows = [_row("mlp", 98.0, excluded=["mlp seed 1"]), _row("rnn", 99.0), _row("finetune", 90.0)]
    a, _ = ContinualHypernet.check_claims(rows, chance)
    assert a.verdict == "not tested" and "mlp seed 1" in a.detail
