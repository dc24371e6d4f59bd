"""The random-pruning recipe: a smoke run's outputs and masks (exact 90% sparsity, uniform
and ERK layer densities), determinism, resume of a lost unit, bad input, and the claim
logic on hand-made rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.recipes.sparsity.random_pruning import RandomPruning
from weightlab.runs import load_tensors, read_json
from weightlab.sparsity import erk_densities, keep_counts

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTHS = (16, 32, 64)  # the smoke widths


def _shapes(w: int) -> dict[str, torch.Size]:
    return {
        "layers.0.weight": torch.Size((w, 40)),
        "layers.1.weight": torch.Size((w, w)),
        "layers.2.weight": torch.Size((10, w)),
    }


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("rp") / "run"
    run_recipe("random-pruning", make_config("random-pruning", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run_outputs_and_masks(smoke):
    assert (smoke / "accuracy_vs_width.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.stem for p in (smoke / "units").glob("*.json")) == ["seed-00", "seed-01"]
    s = read_json(smoke / "summary.json")
    assert [(r["width"], r["arm"]) for r in s["rows"]] == [
        (w, a) for w in WIDTHS for a in ("dense", "uniform", "erk")
    ]
    assert s["members"] == 2 * 3 * 3 and s["reduced_version"].startswith("reduced version: 2")
    for seed in (0, 1):
        t = load_tensors(smoke / "units" / f"seed-{seed:02d}.safetensors")
        for w in WIDTHS:
            shapes = _shapes(w)
            total = sum(sh.numel() for sh in shapes.values())
            uni = {n: t[f"uniform.{w}.{n}"] for n in shapes}
            erk = {n: t[f"erk.{w}.{n}"] for n in shapes}
            # uniform: 10% of every layer; ERK: the ERK counts; both ~10% overall
            assert [int(m.sum()) for m in uni.values()] == [
                round(0.1 * sh.numel()) for sh in shapes.values()
            ]
            assert {n: int(m.sum()) for n, m in erk.items()} == keep_counts(
                shapes, erk_densities(shapes, 0.1)
            )
            for masks in (uni, erk):
                assert sum(int(m.sum()) for m in masks.values()) == pytest.approx(
                    0.1 * total, abs=2
                )
            # ERK gives the small output layer more weights than uniform
            assert erk["layers.2.weight"].sum() > uni["layers.2.weight"].sum()
    c = {x["id"]: x for x in s["claims"]}
    assert c["b"]["verdict"] == "not tested" and "256" in c["b"]["detail"]
    assert "quickly grow to matching" in c["a"]["quote"]


def test_lost_unit_is_recomputed_alone_and_identically(smoke, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(smoke, copy)
    (copy / "units" / "seed-01.json").unlink()
    run_recipe("random-pruning", make_config("random-pruning", smoke=True), out=copy)
    assert read_json(copy / "timing.json")["computed_units"] == ["seed-01"]
    assert (copy / "summary.json").read_bytes() == (smoke / "summary.json").read_bytes()


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"widths": "64,x"}, "widths"),
        ({"widths": "64,64"}, "twice"),
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": 0.0}, "sparsity"),
    ],
)
def test_bad_config_is_a_one_line_error(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_config("random-pruning", smoke=True, **override)
    assert "\n" not in str(e.value)


# -- claim logic on hand-made rows ---------------------------------------------------------

CHANCE = 10.0


def _rows(table: dict[int, tuple[float, float, float]], excluded=()):
    rows = []
    for w, accs in table.items():
        for arm, acc in zip(("dense", "uniform", "erk"), accs, strict=True):
            rows.append(
                {
                    "width": w,
                    "arm": arm,
                    "density": 1.0 if arm == "dense" else 0.1,
                    "test_acc_mean": acc,
                    "excluded": list(excluded) if (w, arm) == (64, "uniform") else [],
                }
            )
    return rows


def _verdicts(table, **kw):
    return {c.id: c for c in RandomPruning.check_claims(_rows(table, **kw), CHANCE)}


GOOD = {
    64: (80.0, 70.0, 74.0),
    128: (81.0, 73.0, 76.0),
    256: (82.0, 76.5, 78.0),
    512: (82.0, 78.0, 79.0),
    1024: (82.0, 79.5, 80.0),
}


def test_claims_held():
    c = _verdicts(GOOD)
    assert c["a"].verdict == "held" and c["b"].verdict == "held"
    assert c["a"].evidence["uniform"]["shrink_pts"] == pytest.approx(10.0 - 2.5)
    assert c["a"].evidence["erk"]["shrink_pts"] == pytest.approx(6.0 - 2.0)
    assert "90% sparsity" in c["a"].statement
    assert [d["width"] for d in c["b"].evidence["diffs"]] == [256, 512, 1024]


def test_claims_did_not_hold():
    # ERK's gap widens by 0.6 pt between 256 and 512 (> 0.5): (a) fails on that step
    bad = {**GOOD, 512: (82.0, 78.0, 77.4)}
    c = _verdicts(bad)
    assert c["a"].verdict == "did not hold"
    assert c["a"].evidence["erk"]["max_widening_pts"] == pytest.approx(0.6)
    assert c["a"].evidence["uniform"]["ok"] is True
    # ... and ERK < uniform at 512: (b) fails
    assert c["b"].verdict == "did not hold" and "w=512" in c["b"].detail
    # a gap that shrinks by less than 1 pt overall
    flat = {w: (80.0, 75.0, 75.0 + (0.2 if w == 1024 else 0.0)) for w in GOOD}
    flat[1024] = (80.0, 75.5, 75.5)
    assert _verdicts(flat)["a"].verdict == "did not hold"


def test_claims_not_tested():
    c = _verdicts({w: (12.0, 11.0, 11.0) for w in GOOD})  # dense at chance
    assert {v.verdict for v in c.values()} == {"not tested"}
    assert "dense w=64" in c["a"].detail
    c = _verdicts(GOOD, excluded=["uniform w=64 seed 1"])
    assert {v.verdict for v in c.values()} == {"not tested"} and "diverged" in c["a"].detail
    c = _verdicts({64: GOOD[64], 128: GOOD[128]})
    assert c["a"].verdict == "held" and c["b"].verdict == "not tested"
    c = _verdicts({64: GOOD[64]})
    assert c["a"].verdict == "not tested"
