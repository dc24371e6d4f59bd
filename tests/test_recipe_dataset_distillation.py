"""The dataset-distillation recipe: a smoke run's outputs, resume of a lost unit, bad
input, and the claim logic on hand-made rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.probes.dataset_distillation import DatasetDistillation
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")
NAME = "dataset-distillation"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("dd") / "run"
    run_recipe(NAME, make_config(NAME, smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run_outputs(smoke):
    assert (smoke / "dataset_distillation.png").read_bytes().startswith(b"\x89PNG")
    units = sorted(p.stem for p in (smoke / "units").glob("*.json"))
    assert units == ["experts-plain", "experts-smooth", "seed-00", "seed-01"]
    s = read_json(smoke / "summary.json")
    arms = [(r["ipc"], r["arm"]) for r in s["rows"]]
    assert arms == [
        (i, a) for i in (1, 10) for a in ("random", "distilled-plain", "distilled-smooth")
    ]
    assert all(r["n"] == 2 for r in s["rows"])
    assert s["members"] == 12 and set(s["experts"]) == {"plain", "smooth"}
    assert [c["id"] for c in s["claims"]] == ["a", "b", "c"]
    assert all(c["verdict"] in ("held", "did not hold", "not tested") for c in s["claims"])
    assert s["claims"][0]["quote"].startswith("we introduce the integration of clipping loss")


def test_lost_unit_is_recomputed_alone_and_identically(smoke, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(smoke, copy)
    (copy / "units" / "seed-01.json").unlink()
    run_recipe(NAME, make_config(NAME, smoke=True), out=copy)
    assert read_json(copy / "timing.json")["computed_units"] == ["seed-01"]
    assert (copy / "summary.json").read_bytes() == (smoke / "summary.json").read_bytes()


def test_bad_input_is_one_line():
    with pytest.raises(ConfigError, match="exceeds --expert-epochs 4"):
        make_config(NAME, expert_epochs=4, max_start_epoch=3, match_epochs=2)
    with pytest.raises(ConfigError):
        make_config(NAME, ipcs="0")


def _rows(rnd1, dist1, rnd10, dist10, plain10, std10=(0.5, 0.5)):
    def row(ipc, arm, vals, std=0.0):
        m = sum(vals) / len(vals)
        return {
            "ipc": ipc,
            "arm": arm,
            "test_acc_mean": m,
            "test_acc_std": std,
            "test_acc_values": vals,
            "diverged": [],
        }

    return [
        row(1, "random", [rnd1] * 3),
        row(1, "distilled-plain", [dist1] * 3),
        row(1, "distilled-smooth", [dist1] * 3),
        row(10, "random", [rnd10] * 3, std10[0]),
        row(10, "distilled-plain", [plain10] * 3),
        row(10, "distilled-smooth", [dist10] * 3, std10[1]),
    ]


EXPERTS = {"plain": {"test_acc_mean": 95.0}, "smooth": {"test_acc_mean": 95.0}}


def test_claims_by_hand():
    check = DatasetDistillation.check_claims
    v = [c.verdict for c in check(_rows(60, 70, 88, 90, 90), EXPERTS, 10.0)]
    assert v == ["held", "held", "held"]
    # 9.9 points at ipc 1; gain 0.4 below the spread 0.5 at ipc 10; smoothed 0.6 worse
    v = [c.verdict for c in check(_rows(60, 69.9, 88, 88.4, 89.0), EXPERTS, 10.0)]
    assert v == ["did not hold", "did not hold", "did not hold"]
    # exactly -0.5 points is still within the margin
    assert check(_rows(60, 70, 88, 90, 90.5), EXPERTS, 10.0)[2].verdict == "held"
    bad = {"plain": {"test_acc_mean": 12.0}, "smooth": {"test_acc_mean": 95.0}}
    assert {c.verdict for c in check(_rows(60, 70, 88, 90, 90), bad, 10.0)} == {"not tested"}
