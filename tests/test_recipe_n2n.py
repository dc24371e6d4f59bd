"""The n2n-compression recipe: smoke outputs and determinism, stage 2, the loop engine,
the claim logic on hand-made records, and bad input."""

from __future__ import annotations

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.recipes.sparsity.n2n_compression import N2NCompression
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, weightlab_cache):
    out = tmp_path_factory.mktemp("n2n") / "run"
    run_recipe("n2n-compression", make_config("n2n-compression", smoke=True), out=out)
    return out


def test_smoke_outputs(smoke):
    units = sorted(p.name for p in (smoke / "units").glob("*.json"))
    assert units == [
        "policy-s0.json",
        "policy-s1.json",
        "random-s0.json",
        "random-s1.json",
        "teacher.json",
    ]
    s = read_json(smoke / "summary.json")
    cfg = make_config("n2n-compression", smoke=True)
    per = cfg.episodes * cfg.rollouts
    assert [(r["sampler"], r["seed"]) for r in s["rows"]] == [
        ("random", 0),
        ("policy", 0),
        ("random", 1),
        ("policy", 1),
    ]
    for r in s["rows"]:
        assert len(r["rewards"]) == per
        assert r["best_reward"] == max(r["rewards"])
        assert r["running_best"][-1] == r["best_reward"]
        assert r["running_best"] == sorted(r["running_best"])
        b = r["best"]
        assert b["widths"][0] == 40 and b["widths"][-1] == 10
        assert 0 < b["compression"] <= 1
    assert s["teacher"]["params"] == 40 * 32 + 32 + 2 * (32 * 32 + 32) + 32 * 10 + 10
    assert s["reduced_version"].startswith("reduced version: MLP teacher 4x32 on mnist1d")
    assert "reduced version" in N2NCompression.claim
    assert s["best_student"]["sampler"] in ("policy", "random")
    assert (smoke / "search_rewards.png").stat().st_size > 1000
    trained = set()
    for k in ("random", "policy"):
        for seed in (0, 1):
            m = read_json(smoke / "units" / f"{k}-s{seed}.json")["metrics"]
            trained |= {(seed, st["key"]) for st in m["students"] if st["widths"]}
    assert s["members"] == 1 + len(trained)  # the teacher and each trained student once
    # rewards of one architecture agree between the samplers of a seed (shared cache)
    for seed in (0, 1):
        units = [
            read_json(smoke / "units" / f"{k}-s{seed}.json")["metrics"]
            for k in ("random", "policy")
        ]
        r = {st["key"]: st["reward"] for st in units[0]["students"]}
        for st in units[1]["students"]:
            if st["key"] in r:
                assert st["reward"] == r[st["key"]]


def test_smoke_is_deterministic(smoke, tmp_path):
    run_recipe(
        "n2n-compression", make_config("n2n-compression", smoke=True), out=tmp_path / "again"
    )
    assert (tmp_path / "again" / "summary.json").read_bytes() == (
        smoke / "summary.json"
    ).read_bytes()


def test_stage_two_shrinks_the_best_removal_student(tmp_path):
    cfg = make_config("n2n-compression", smoke=True, stages=2)
    _, s = run_recipe("n2n-compression", cfg, out=tmp_path / "s2")
    per = cfg.episodes * cfg.rollouts
    for r in s["rows"]:
        assert len(r["rewards"]) == 2 * per  # removal, then shrinkage of the best
    for sampler in ("policy", "random"):
        samples = read_json(tmp_path / "s2" / "units" / f"{sampler}-s0.json")["metrics"]["samples"]
        best = max(samples[:per], key=lambda x: (x["reward"], x["key"]))["key"]
        assert all(x["stage"] == 2 and x["key"].split(":")[0] == best for x in samples[per:])


@pytest.mark.slow
def test_the_loop_engine_gives_the_population_rewards(tmp_path, smoke):
    cfg = make_config("n2n-compression", smoke=True, engine="loop")
    _, s = run_recipe("n2n-compression", cfg, out=tmp_path / "loop")
    base = read_json(smoke / "summary.json")
    for a, b in zip(s["rows"], base["rows"], strict=True):
        assert a["rewards"] == pytest.approx(b["rewards"], abs=1e-6)


def _row(sampler, seed, best, diverged=()):
    return {"sampler": sampler, "seed": seed, "best_reward": best, "diverged": list(diverged)}


TEACHER = {"val_acc": 0.6, "test_acc": 0.6, "params": 100, "diverged": False}


def _verdict(policy, random, teacher=TEACHER, **kw):
    rows = [_row("policy", i, p) for i, p in enumerate(policy)]
    rows += [_row("random", i, q) for i, q in enumerate(random)]
    for k, v in kw.items():
        rows[int(k[1:])]["diverged"] = v
    (c,) = N2NCompression.check_claims(teacher, rows, chance=10.0, seeds=len(policy))
    return c


def test_claim_holds_with_four_wins_of_five_and_a_higher_mean():
    c = _verdict([0.6, 0.7, 0.65, 0.7, 0.5], [0.5, 0.6, 0.6, 0.6, 0.55])
    assert c.held is True and c.evidence["wins"] == 4
    assert "policy higher in 4/5" in c.detail


def test_claim_fails_with_three_wins_or_a_lower_mean():
    assert _verdict([0.6, 0.7, 0.65, 0.4, 0.4], [0.5, 0.6, 0.6, 0.6, 0.55]).held is False
    # four wins by a hair, one big loss: mean lower
    c = _verdict([0.51, 0.51, 0.51, 0.51, 0.1], [0.5, 0.5, 0.5, 0.5, 0.9])
    assert c.held is False and c.evidence["wins"] == 4
    # ties are not wins
    assert _verdict([0.5] * 5, [0.5] * 5).held is False


def test_claim_not_tested_without_a_teacher_or_with_diverged_students():
    at_chance = dict(TEACHER, test_acc=0.12)
    c = _verdict([0.6] * 5, [0.5] * 5, teacher=at_chance)
    assert c.held is None and "teacher baseline did not learn" in c.detail
    c = _verdict([0.6] * 5, [0.5] * 5, p2=["1100"])
    assert c.held is None and "diverged" in c.detail
    c = N2NCompression.check_claims(TEACHER, [], chance=10.0, seeds=5)[0]
    assert c.held is None


def test_wins_needed_scale_with_seeds():
    assert _verdict([0.6, 0.6], [0.5, 0.5]).evidence["needed_wins"] == 2
    assert _verdict([0.6] * 10, [0.5] * 10).evidence["needed_wins"] == 8


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "bad"
    cfg = make_config("n2n-compression", smoke=True, student_batch=500)
    with pytest.raises(ConfigError, match="--student-batch 500 exceeds --student-samples 200"):
        run_recipe("n2n-compression", cfg, out=out)
    assert not out.exists()
    with pytest.raises(ConfigError, match="--stages"):
        make_config("n2n-compression", stages=3)
    with pytest.raises(ConfigError, match="--student-samples 5000 exceeds"):
        run_recipe("n2n-compression", make_config("n2n-compression", student_samples=5000), out=out)
    assert not out.exists()
