"""The learngene recipe (SWS [#12]): a smoke run's outputs, resume of a lost unit, the
short tuning read from the tuning run, stored parameters and FLOPs by hand, bad input and
the claim logic on hand-made rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.growth.sws import ResidualMLP
from weightlab.models.factory import build
from weightlab.recipes.growth.learngene import Learngene, LearngeneConfig, _record
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import load_tensors, read_json
from weightlab.train import train
from weightlab.train.config import OptimConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("lg") / "run"
    run_recipe("learngene", make_config("learngene", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run_outputs(smoke):
    assert (smoke / "accuracy_vs_depth.png").read_bytes().startswith(b"\x89PNG")
    units = sorted(p.stem for p in (smoke / "units").glob("*.json"))
    assert units == ["aux-00", "aux-01", "scratch", "teacher", "tune-d03", "tune-d06"]
    s = read_json(smoke / "summary.json")
    assert [(r["arm"], r["depth"]) for r in s["rows"]] == [("teacher", 6), ("auxiliary", 6)] + [
        (a, d) for d in (3, 6) for a in ("scratch", "sws_short", "sws", "tb_short", "tb")
    ]
    # 2 seeds: teacher, auxiliary, and 5 arms at 2 depths
    assert s["members"] == 2 * (2 + 5 * 2)
    assert [c["id"] for c in s["claims"]] == ["a", "b", "c"]
    assert "1 epoch tuning" in s["claims"][1]["quote"]
    # the distilled auxiliary net keeps 3 shared blocks (the teacher has 6)
    aux = load_tensors(smoke / "units" / "aux-00.safetensors")
    assert sorted({k.split(".")[1] for k in aux if k.startswith("stages.")}) == ["0", "1", "2"]
    teacher = load_tensors(smoke / "units" / "teacher.safetensors")
    assert "1.blocks.5.fc1.weight" in teacher and "1.blocks.6.fc1.weight" not in teacher


def test_lost_unit_is_recomputed_alone_and_identically(smoke, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(smoke, copy)
    (copy / "units" / "tune-d06.json").unlink()
    run_recipe("learngene", make_config("learngene", smoke=True), out=copy)
    assert read_json(copy / "timing.json")["computed_units"] == ["tune-d06"]
    assert (copy / "summary.json").read_bytes() == (smoke / "summary.json").read_bytes()


def test_the_short_tuning_read_from_a_longer_run_equals_a_short_run():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 40, generator=g)
    y = (x[:, :3].sum(1) > 0).long()
    data = TaskData(
        "toy", Split(x[:128], y[:128]), Split(x[128:164], y[128:164]), Split(x[164:], y[164:]), 2
    )
    runs = {}
    for epochs in (1, 3):
        model = build(ResidualMLP, 2, 40, 8, 2, seed=4)
        runs[epochs] = train(
            model, data, TrainConfig(epochs, 32, 0, OptimConfig("adam", 1e-3)), 7, seed=4
        )
    assert _record("sws_short", 6, 0, runs[3], upto=1) == _record("sws_short", 6, 0, runs[1])
    assert _record("sws", 6, 0, runs[3])["last_step"] == 12


def test_stored_parameters_and_flops_by_hand():
    c = Learngene.costs(LearngeneConfig(), 3500, (40, 10))
    stem_head = 40 * 128 + 128 + 128 * 10 + 10
    block = 2 * (128 * 128 + 128)
    assert c["stored_learngene"] == stem_head + 3 * block == 105_610
    assert c["stored_targets"] == 3 * stem_head + 27 * block == 911_262
    assert c["stored_ratio"] == pytest.approx(8.63, abs=0.01)  # the 8.6x
    n = 54 * 64  # examples per epoch at batch 64

    def fwd(blocks):
        return 2 * (40 * 128 + blocks * 2 * 128 * 128 + 128 * 10)

    scratch = 3 * 30 * n * (fwd(6) + fwd(9) + fwd(12))
    sws = 3 * 30 * n * fwd(12) + 30 * n * fwd(12) + 3 * 5 * n * (fwd(6) + fwd(9) + fwd(12))
    assert c["flops_scratch"] == scratch and c["flops_sws"] == sws
    assert c["flops_ratio"] == pytest.approx(1.32, abs=0.01)  # the 1.3x
    assert c["flops_sws_as_run"] == sws - 30 * n * fwd(12) + 3500 * fwd(12)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"depths": "6,10"}, "--depths 10 is not a positive multiple of the 3 stages"),
        ({"depths": "6,x"}, "comma-separated"),
        ({"depths": "6,6"}, "twice"),
        ({"teacher_blocks": "2,6"}, "one block inside each"),
        ({"teacher_blocks": "2,6,12"}, "one block inside each"),
        ({"teacher_blocks": "2,3,10"}, "one block inside each"),
        ({"short_epochs": 6}, "exceeds --tune-epochs"),
        ({"tau": 0.0}, "tau"),
    ],
)
def test_bad_config_is_a_one_line_error(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_config("learngene", **override)
    assert "\n" not in str(e.value)


def test_cli_refuses_an_indivisible_depth_before_writing(cli, tmp_path):
    rc, _, err = cli("run", "learngene", "--depths", "6,10", "--out", tmp_path / "r")
    assert rc == 2 and "multiple of the 3 stages" in err and not (tmp_path / "r").exists()


# -- claim logic on hand-made rows ---------------------------------------------------------

ARMS = ("scratch", "sws_short", "sws", "tb_short", "tb")
GOOD = {6: (67.0, 67.5, 68.0, 64.0, 66.0), 9: (68.0, 66.0, 68.5, 63.0, 66.0),
        12: (69.0, 66.0, 69.0, 62.0, 66.0)}  # fmt: skip
COSTS = {"flops_sws": 1.0, "flops_scratch": 1.3, "flops_ratio": 1.3}


def _rows(table, teacher=70.0, excluded=()):
    rows = [{"arm": "teacher", "depth": 12, "test_acc_mean": teacher, "excluded": []}]
    for d, accs in table.items():
        for arm, a in zip(ARMS, accs, strict=True):
            ex = list(excluded) if (arm, d) == ("sws", 9) else []
            rows.append({"arm": arm, "depth": d, "test_acc_mean": a, "excluded": ex})
    return rows


def _verdicts(table, costs=COSTS, **kw):
    cfg = LearngeneConfig()
    return {c.id: c for c in Learngene.check_claims(_rows(table, **kw), 10.0, costs, cfg)}


def test_claims_held_and_not():
    c = _verdicts(GOOD)
    assert [c[k].verdict for k in "abc"] == ["held", "held", "held"]
    assert "at the last evaluation instead (reported, not judged)" in c["a"].detail
    assert [d["diff_pts"] for d in c["c"].evidence["diffs"]] == [3.5, 3.0, 4.0]
    # (a) fails when SWS is below scratch at one depth, or costs more FLOPs
    worse = {**GOOD, 9: (68.0, 66.0, 67.9, 63.0, 66.0)}
    assert _verdicts(worse)["a"].verdict == "did not hold"
    costly = {"flops_sws": 2.0, "flops_scratch": 1.3, "flops_ratio": 0.65}
    assert _verdicts(GOOD, costs=costly)["a"].verdict == "did not hold"
    # (b) fails when no depth's 1-epoch SWS reaches scratch
    short = {d: (a[0], a[0] - 0.1, *a[2:]) for d, a in GOOD.items()}
    assert _verdicts(short)["b"].verdict == "did not hold"
    # (c) needs the 1 pt margin at every depth
    thin = {**GOOD, 12: (69.0, 66.0, 69.0, 65.5, 66.0)}
    cc = _verdicts(thin)["c"]
    assert cc.verdict == "did not hold" and "depth 12 +0.50" in cc.detail


def test_claims_not_tested():
    c = _verdicts(GOOD, teacher=10.5)
    assert {v.verdict for v in c.values()} == {"not tested"} and "teacher" in c["a"].detail
    c = _verdicts({**GOOD, 6: (10.0, *GOOD[6][1:])})
    assert c["c"].verdict == "not tested" and "scratch depth 6" in c["c"].detail
    c = _verdicts(GOOD, excluded=["sws depth 9 seed 1"])
    assert c["a"].verdict == "not tested" and "diverged" in c["a"].detail
    assert c["c"].verdict == "held"  # (c) reads only the 1-epoch arms
