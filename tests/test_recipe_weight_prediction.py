"""The weight-prediction recipe: a smoke run's outputs, the step-0 accuracy of the predicted
init, resume of a lost unit, bad input (a width above c_max), and the claim logic on
hand-made rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.growth.weight_prediction import (
    ARMS,
    WeightPrediction,
    WeightPredictionConfig,
    _curve,
)
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, weightlab_cache) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("wp") / "run"
    run_recipe("weight-prediction", make_config("weight-prediction", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run_outputs(smoke):
    assert (smoke / "weight_prediction.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.stem for p in (smoke / "units").glob("*.json")) == ["seed-00", "seed-01"]
    s = read_json(smoke / "summary.json")
    assert [(r["width"], r["arm"]) for r in s["rows"]] == [(24, a) for a in ARMS]
    assert s["members"] == 2 * len(ARMS)
    for r in s["rows"]:
        assert r["n"] == 2 and len(r["curve_mean"]) == 1  # one epoch: one evaluation
        assert 0 <= r["step0_acc_mean"] <= 100
        # one epoch: the early (epoch 1) and final accuracies are the same evaluation
        assert r["early_acc_values"] == r["final_test_acc_values"]
    assert set(s["meta_loss_curves"]) == {"lowrank", "chunk"}
    assert len(s["meta_loss_curves"]["lowrank"]) == 20  # 20 steps: one point each
    c = {x["id"]: x for x in s["claims"]}
    assert c["a"]["quote"] == "better performance than those initialized randomly"
    assert c["b"]["quote"] == "or using existing hypernetworks"
    assert "reduced version" in s["reduced_version"]
    timing = read_json(smoke / "timing.json")
    assert "meta_seconds" not in s and "Meta-training time" in str(timing)


def test_random_arm_step0_accuracy_is_the_factory_init(smoke):
    """The random arm starts from the factory's weights (PyTorch's default init): its
    step-0 accuracy is that of the net built from the same seed."""
    from weightlab.data import load_dataset
    from weightlab.models.factory import build
    from weightlab.models.mlp import MLP
    from weightlab.seeding import derive_seed

    data = load_dataset("mnist1d")
    s = read_json(smoke / "summary.json")
    row = next(r for r in s["rows"] if r["arm"] == "random")
    for seed, acc in enumerate(row["step0_acc_values"]):
        net = build(MLP, [40, 24, 24, 10], seed=derive_seed("weight-prediction", "init", seed, 24))
        with torch.no_grad():
            ref = (net(data.test.x).argmax(1) == data.test.y).double().mean()
        assert acc == pytest.approx(100 * float(ref))


def test_lost_unit_is_recomputed_alone_and_identically(smoke, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(smoke, copy)
    (copy / "units" / "seed-01.json").unlink()
    run_recipe("weight-prediction", make_config("weight-prediction", smoke=True), out=copy)
    assert read_json(copy / "timing.json")["computed_units"] == ["seed-01"]
    assert (copy / "summary.json").read_bytes() == (smoke / "summary.json").read_bytes()


def test_bad_input_writes_nothing(tmp_path, cli):
    with pytest.raises(ConfigError, match=r"--test-widths has width 300, above .*--c-max 256"):
        WeightPredictionConfig(test_widths="96,300")
    with pytest.raises(ConfigError, match="--train-widths has width 512"):
        WeightPredictionConfig(train_widths="32,512")
    with pytest.raises(ConfigError, match="--early-epochs"):
        WeightPredictionConfig(epochs=3, early_epochs=5)
    with pytest.raises(ConfigError, match="comma-separated"):
        WeightPredictionConfig(test_widths="96;192")
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="batch-size"):
        run_recipe(
            "weight-prediction",
            make_config("weight-prediction", smoke=True, batch_size=100000),
            out=out,
        )
    assert not out.exists()
    rc, _, err = cli("run", "weight-prediction", "--smoke", "--c-max", "16", "--out", "r")
    assert rc == 2 and "above the predictor's --c-max 16" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_curve_means_equal_stretches():
    assert _curve([1.0, 3.0, 5.0, 7.0], points=2) == [2.0, 6.0]
    assert _curve([1.0, 2.0], points=5) == [1.0, 2.0]


def _rows(acc: dict[tuple[int, str], float], diverged=()) -> list[dict]:
    rows = []
    for w in (96, 192):
        for arm in ARMS:
            rows.append(
                {
                    "width": w,
                    "arm": arm,
                    "final_test_acc_mean": acc.get((w, arm), 60.0),
                    "excluded": [f"{arm} w={w} seed 0"] if (w, arm) in diverged else [],
                }
            )
    return rows


def test_claim_logic():
    check = WeightPrediction.check_claims
    ok = {(w, "predicted"): 61.0 for w in (96, 192)}
    a, b = check(_rows(ok), chance=10.0)
    assert a.held is True and b.held is True
    assert "w=96 61.00 - 60.00 = +1.00" in a.detail
    # +0.4 pt at one width is under the margin
    a, b = check(_rows({**ok, (192, "random"): 60.6}), chance=10.0)
    assert a.held is False and b.held is True
    # tiled ahead at one width
    a, b = check(_rows({**ok, (96, "tiled"): 62.0}), chance=10.0)
    assert a.held is True and b.held is False
    # a random baseline that learned nothing: neither is tested
    a, b = check(_rows({**ok, (96, "random"): 15.0}), chance=10.0)
    assert a.held is None and b.held is None and "did not learn" in a.detail
    # a diverged tiled member leaves (b) untested, not (a)
    a, b = check(_rows(ok, diverged={(96, "tiled")}), chance=10.0)
    assert a.held is True and b.held is None and "diverged" in b.detail
