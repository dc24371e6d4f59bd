"""The sparse-rl recipe (supervised proxy of row [#99]): the masks (local patches, random
fan-in, dense units) with equal non-zeros, frozen hidden weights, a smoke run, and the
claim checks on hand-made rows."""

from __future__ import annotations

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.population import MemberSpec
from weightlab.recipes.members import train_members
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.recipes.sparsity.sparse_rl import (
    EFFECT_PTS,
    LEAD_PTS,
    SparseRL,
    local_mask,
    mask_set,
)
from weightlab.train.config import OptimConfig, ParamGroup, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_local_mask_is_a_3x3_patch_per_unit():
    m = local_mask(40, 8)
    assert m.shape == (40, 64) and bool((m.sum(1) == 9).all())
    # unit 0: rows 0-2, columns 0-2; unit 7: position 7 = row 1, column 1
    img = m[0].view(8, 8)
    assert bool(img[:3, :3].all()) and int(img.sum()) == 9
    img = m[7].view(8, 8)
    assert bool(img[1:4, 1:4].all()) and int(img.sum()) == 9
    assert torch.equal(m[36], m[0])  # 36 positions dealt out in turn


def test_masks_have_equal_non_zeros():
    sets = {k: mask_set(k, 256, 64, 10, seed=3) for k in ("local", "random", "dense36")}
    nnz = {k: int(s["layers.0.weight"].sum()) for k, s in sets.items()}
    assert nnz == {"local": 2304, "random": 2304, "dense36": 2304}
    assert bool((sets["random"]["layers.0.weight"].sum(1) == 9).all())
    assert int(sets["dense36"]["layers.0.bias"].sum()) == 36
    assert int(sets["dense36"]["layers.1.weight"].sum()) == 360
    r2 = mask_set("random", 256, 64, 10, seed=4)["layers.0.weight"]
    assert not torch.equal(r2, sets["random"]["layers.0.weight"])
    with pytest.raises(ConfigError, match="square images"):
        mask_set("local", 16, 40, 10, seed=0)
    with pytest.raises(ConfigError, match="multiple of the input size"):
        mask_set("dense", 10, 64, 10, seed=0)


def test_frozen_hidden_weights_stay_at_init_in_the_population():
    data = load_dataset("digits", "cpu")
    factory = model_factory(MLP, [64, 16, 10])
    frozen = OptimConfig("adam", lr=1e-2, groups=(ParamGroup(("layers.0.*",), lr_mult=0.0),))
    specs = [MemberSpec(seed=1, optim=frozen), MemberSpec(seed=1)]
    cfg = TrainConfig(1, 100, 0, OptimConfig("adam", lr=1e-2))
    _, finals = train_members(factory, specs, data, cfg)
    init = factory(1).state_dict()
    assert torch.equal(finals[0]["layers.0.weight"], init["layers.0.weight"])
    assert torch.equal(finals[0]["layers.0.bias"], init["layers.0.bias"])
    assert not torch.equal(finals[0]["layers.1.weight"], init["layers.1.weight"])
    assert not torch.equal(finals[1]["layers.0.weight"], init["layers.0.weight"])


def test_smoke_run(tmp_path, weightlab_cache):
    path, summary = run_recipe(
        "sparse-rl", make_config("sparse-rl", smoke=True), out=tmp_path / "r"
    )
    assert summary["members"] == 2 * 2 * 3
    assert {(r["mode"], r["mask"]) for r in summary["rows"]} == {
        (m, k) for m in ("frozen", "trained") for k in ("local", "random", "dense36")
    }
    assert len({r["nnz"] for r in summary["rows"]}) == 1  # equal non-zeros (64 · 9)
    assert "out of scope" in summary["proxy"]
    before = (path / "summary.json").read_bytes()
    run_recipe("sparse-rl", make_config("sparse-rl", smoke=True), out=path)
    assert (path / "summary.json").read_bytes() == before


def _rows(values: dict, diverged=()):
    rows = []
    for (mode, mask), vals in values.items():
        rows.append(
            {
                "mode": mode,
                "mask": mask,
                "test_acc_mean": sum(vals) / len(vals),
                "test_acc_values": list(vals),
                "seeds": list(range(len(vals))),
                "diverged": [d for d in diverged if d.startswith(f"{mask} {mode}")],
            }
        )
    return rows


BASE = {
    ("frozen", "local"): [80, 81, 79, 80, 80],
    ("frozen", "random"): [85, 86, 84, 85, 86],
    ("frozen", "dense36"): [75, 76, 74, 75, 77],
    ("trained", "local"): [95, 95, 96, 95, 94],
    ("trained", "random"): [93, 93, 94, 93, 92],
    ("trained", "dense36"): [92, 92, 93, 92, 91],
}


def _verdicts(values, **kw):
    return {c.id: c for c in SparseRL.check_claims(_rows(values, **kw), chance=10.0)}


def test_claims_hold_on_a_ranking_that_flips():
    c = _verdicts(BASE)
    assert c["a"].verdict == "held" and c["b"].verdict == "held", (c["a"].detail, c["b"].detail)
    assert c["b"].evidence["per_mode"]["frozen"]["best"] == "random"
    assert c["b"].evidence["per_mode"]["trained"]["best"] == "local"


def test_claim_b_fails_when_the_best_is_the_same_or_the_lead_small():
    same = dict(BASE)
    same[("trained", "random")] = [96, 96, 97, 96, 95]
    assert _verdicts(same)["b"].verdict == "did not hold"
    close = dict(BASE)
    close[("trained", "random")] = [v - LEAD_PTS + 0.2 for v in BASE[("trained", "local")]]
    assert _verdicts(close)["b"].verdict == "did not hold"


def test_claim_a_needs_size_and_a_ci_above_zero():
    flat = {k: [80, 81, 79, 80, 80] for k in BASE}
    assert _verdicts(flat)["a"].verdict == "did not hold"
    noisy = {k: [80, 81, 79, 80, 80] for k in BASE}
    noisy[("trained", "local")] = [80 + EFFECT_PTS + d for d in (15, -12, 10, -9, 3)]
    assert _verdicts(noisy)["a"].verdict == "did not hold"  # big mean, CI spans 0


def test_claims_not_tested_without_learning_or_with_divergence():
    chance = {k: [12, 13, 11, 12, 12] for k in BASE}
    assert {c.verdict for c in _verdicts(chance).values()} == {"not tested"}
    c = _verdicts(BASE, diverged=["local trained seed 2"])
    assert {x.verdict for x in c.values()} == {"not tested"}


def test_summary_lists_rows_still_improving_at_the_end():
    members = [
        {
            "mask": kind,
            "mode": mode,
            "seed": s,
            "nnz": 2304,
            "diverged": False,
            "test_acc": 0.9,
            "early_stop_step": 960 if (mode, kind) == ("frozen", "local") else 500,
            "last_step": 1000,
        }
        for s in (0, 1)
        for mode in ("frozen", "trained")
        for kind in ("local", "random", "dense36")
    ]
    summary = SparseRL().summarize(members, chance=10.0)
    assert summary["still_improving"] == ["local frozen"]  # early stop in the last 10%
    assert "1 of 6 rows" in SparseRL().tables(summary)[0][0]
