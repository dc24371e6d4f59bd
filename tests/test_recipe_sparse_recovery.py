"""The sparse-recovery recipe: smoke outputs, determinism, IMP counts, claims on hand-made
numbers, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.recipes.sparsity.sparse_recovery import (
    MAX_REL_ERROR,
    RECOVERY_N,
    PlantedStudent,
    SparseRecovery,
    imp_keep_counts,
)
from weightlab.runs import read_json
from weightlab.sparsity import IMPConfig, density_schedule
from weightlab.sparsity.iht import HardThreshold
from weightlab.sparsity.matching import recovery_metrics
from weightlab.train import train
from weightlab.train.config import OptimConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("sr") / "run"
    run_recipe("sparse-recovery", make_config("sparse-recovery", smoke=True), out=out)
    return out


def test_smoke_outputs(smoke):
    s = read_json(smoke / "summary.json")
    assert [r["n"] for r in s["recovery"]] == [100, 400]
    for r in s["recovery"]:
        assert len(r["f1_values"]) == 2 and all(0 <= f <= 1 for f in r["f1_values"])
    assert [a["arm"] for a in s["mlp"]] == ["dense", "imp", "iht"]
    imp, iht = s["mlp"][1], s["mlp"][2]
    assert imp["density"] == pytest.approx(iht["density"])  # same per-layer counts
    assert [m["d"] for m in s["memory"]] == [100, 200]
    assert s["memory"][1]["imp_bytes"] > s["memory"][1]["iht_dense_bytes"]
    assert (smoke / "recovery_vs_n.png").exists()
    assert {c["id"] for c in s["claims"]} == {"a", "b"}
    assert s["claims"][0]["verdict"] == "not tested"  # n = 3200 is not in the smoke run
    units = sorted(p.stem for p in (smoke / "units").glob("*.json"))
    assert units == [
        "iht-mlp",
        "imp-round-00",
        "imp-round-01",
        "imp-round-02",
        "memory",
        "teacher-n000100",
        "teacher-n000400",
    ]
    lines = [json.loads(x) for x in (smoke / "metrics.jsonl").read_text().splitlines()]
    for m in next(x for x in lines if x["unit"] == "teacher-n000400")["members"]:
        assert m["nonzeros"] == 200  # exactly k = 10 per unit x 20 units


@pytest.mark.slow
def test_smoke_is_deterministic(smoke, tmp_path):
    run_recipe("sparse-recovery", make_config("sparse-recovery", smoke=True), out=tmp_path / "b")
    assert (tmp_path / "b" / "summary.json").read_bytes() == (smoke / "summary.json").read_bytes()


def test_imp_keep_counts_match_the_schedule():
    shapes = {"a": torch.Size((300, 40)), "b": torch.Size((100, 300)), "c": torch.Size((10, 100))}
    keep, rounds = imp_keep_counts(shapes, 0.2, 0.1)
    schedule = density_schedule(shapes, IMPConfig(0.2, {"last": 0.1}, target_density=0.1))
    assert rounds == len(schedule) - 1 == 11
    assert sum(keep.values()) / 43000 == pytest.approx(schedule[-1], abs=1e-12)
    assert keep == {"a": 1031, "b": 2577, "c": 313}  # per-layer round-half-up, 11 rounds


def _rows(recovered: int, n=RECOVERY_N):
    return [
        {
            "n": n,
            "recovered": recovered,
            "seeds": 5,
            "f1_mean": 1.0,
            "rel_error_mean": MAX_REL_ERROR / 2,
            "diverged": [],
        }
    ]


def _arms(iht: float, imp: float, dense: float = 60.0):
    return [
        {"arm": "dense", "density": 1.0, "test_acc_mean": dense, "diverged": []},
        {"arm": "imp", "density": 0.086, "test_acc_mean": imp, "diverged": []},
        {"arm": "iht", "density": 0.086, "test_acc_mean": iht, "diverged": []},
    ]


def test_claims_on_hand_made_numbers():
    check = SparseRecovery.check_claims
    oracle = _rows(5)[0]
    a, b = check(_rows(4), _arms(55.0, 55.9), chance=10.0, oracle=oracle)
    assert a.held is True and b.held is True
    a, b = check(_rows(3), _arms(54.0, 55.1), chance=10.0, oracle=oracle)
    assert a.held is False and b.held is False
    a, _ = check(_rows(5, n=1600), _arms(55.0, 55.0), chance=10.0, oracle=None)
    assert a.held is None and "3200" in a.detail
    _, b = check(_rows(5), _arms(55.0, 55.0, dense=15.0), chance=10.0, oracle=oracle)
    assert b.held is None and "did not learn" in b.detail


def test_claim_a_needs_the_true_support_control_to_converge():
    check = SparseRecovery.check_claims
    stuck = {**_rows(3)[0], "rel_error_mean": 0.8, "val_r2_mean": 0.97}
    a, b = check(_rows(0), _arms(55.0, 55.9), chance=10.0, oracle=stuck)
    assert a.held is None and "true-support control" in a.detail and "3/5" in a.detail
    assert b.held is True  # (b) does not depend on the control
    a, _ = check(_rows(4), _arms(55.0, 55.0), chance=10.0, oracle=None)
    assert a.held is None and "not run" in a.detail
    a, _ = check(_rows(0), _arms(55.0, 55.0), chance=10.0, oracle=_rows(4)[0])
    assert a.held is False


def test_true_support_control_trains_on_the_teacher_support_only():
    cfg = make_config("sparse-recovery", steps=30)
    model, res, data = SparseRecovery()._student(cfg, 200, 0, 200, oracle=True)
    assert res.final.step == 30
    support = data.info["support"].T  # (width, d)
    assert torch.equal(model.l1.weight.detach() != 0, support)
    rec = SparseRecovery()._recover(cfg, 200, 0, 200, oracle=True)
    assert rec["nonzeros"] == 200 and 0 < rec["val_r2"] <= 1


def test_student_started_at_the_teacher_stays_there_under_iht():
    """Known answer for the whole chain (forward, thresholding, matching): the teacher is a
    fixed point of IHT at the true k with zero loss, so F1 = 1 and weight error ~ 0."""
    cfg = make_config("sparse-recovery")
    data = SparseRecovery()._teacher(cfg, 200, 0)
    w1, w2 = data.info["w1"].T, data.info["w2"].T
    model = PlantedStudent(cfg.d, cfg.width)
    with torch.no_grad():
        model.l1.weight.copy_(w1)
        model.l2.weight.copy_(w2)
    res = train(
        model,
        data,
        TrainConfig(5, 100, 0, OptimConfig("adam", lr=cfg.lr)),
        0,
        callbacks=[HardThreshold({"l1.weight": 200})],
    )
    assert res.final.train_loss == 0.0
    m = recovery_metrics((model.l1.weight, model.l2.weight), (w1, w2))
    assert m.f1 == 1.0 and m.rel_error < 1e-6


def test_bad_input_is_one_line():
    with pytest.raises(ConfigError, match="--density"):
        make_config("sparse-recovery", density=0.0)
    with pytest.raises(ConfigError, match="--density"):
        make_config("sparse-recovery", density=1.5)
    with pytest.raises(ConfigError, match="--n-values must be comma-separated integers"):
        make_config("sparse-recovery", n_values="100,abc")
    with pytest.raises(ConfigError, match="leaves no non-zero input"):
        make_config("sparse-recovery", d=4, density=0.1)
