"""The grokking-tickets recipe: task view, cost count, masks, the claim logic on hand-made
records, and a smoke run end to end (deterministic, resumable, broken run holds nothing)."""

from __future__ import annotations

import json

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.population import useful_matmul_flops
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.recipes.sparsity.grokking_tickets import (
    GrokkingTickets,
    SearchShape,
    first_step,
    flops_per_step,
    grok_task,
    make_factory,
    member_record,
    pick,
    search_config,
    ticket_masks,
    weight_names,
)
from weightlab.runs import load_tensors
from weightlab.train.loop import EvalPoint, TrainResult


def test_grok_task_evaluates_train_as_val_and_every_held_out_pair_as_test():
    task = load_dataset("modular", "cpu", p=7, train_fraction=0.5)
    g = grok_task(task)
    assert g.val is g.train
    assert len(g.train) + len(g.test) == 49
    pairs = torch.cat([task.info["val_pairs"], task.info["test_pairs"]])
    torch.testing.assert_close(g.test.y, (pairs[:, 0] + pairs[:, 1]) % 7)


def test_unseen_only_drops_held_out_pairs_whose_swap_was_trained():
    task = load_dataset("modular", "cpu", p=7, train_fraction=0.5)
    g = grok_task(task, unseen_only=True)
    seen = {tuple(ab) for ab in task.info["train_pairs"].tolist()}
    held = torch.cat([task.info["val_pairs"], task.info["test_pairs"]]).tolist()
    unseen = [(a, b) for a, b in held if (b, a) not in seen]
    assert 0 < len(unseen) < len(held) and len(g.test) == len(unseen)
    want = torch.tensor([(a + b) % 7 for a, b in unseen])
    torch.testing.assert_close(g.test.y, want)
    rows = torch.tensor(unseen)
    torch.testing.assert_close(
        g.test.x, torch.cat([torch.eye(7)[rows[:, 0]], torch.eye(7)[rows[:, 1]]], 1)
    )


def test_authors_arch_refuses_a_non_commutative_op(tmp_path):
    from weightlab.errors import ConfigError

    cfg = make_config("grokking-tickets", smoke=True, op="sub")
    with pytest.raises(ConfigError, match="symmetric"):
        run_recipe("grokking-tickets", cfg, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("arch", ["mlp", "authors"])
def test_flops_per_step_counts_what_useful_matmul_flops_counts(arch):
    p, n, e, h = 11, 60, 16, 12
    model = make_factory(arch, p, e, h)(0)
    x = torch.randn(n, 2 * p, generator=torch.Generator().manual_seed(0))
    assert flops_per_step(p, n, e, h, arch) == useful_matmul_flops(model, x)


def test_authors_model_sums_one_shared_embedding_and_has_no_bias():
    p, e, h = 7, 5, 4
    model = make_factory("authors", p, e, h)(3)
    assert [n for n, _ in model.named_parameters()] == weight_names("authors")
    a, b = torch.tensor([2, 6]), torch.tensor([6, 0])
    x = torch.cat([torch.eye(p)[a], torch.eye(p)[b]], dim=1)
    emb = model.embed.weight.T  # (p, e): row a is E[a]
    hid = torch.relu((emb[a] + emb[b]) @ model.inproj.weight.T)
    want = hid @ model.outproj.weight.T @ model.unembed.weight.T
    torch.testing.assert_close(model(x), want)


def test_authors_init_is_normal_with_variance_one_over_fan_in_and_seeded():
    f = make_factory("authors", 97, 500, 48)
    m1, m2, m3 = f(1), f(1), f(2)
    torch.testing.assert_close(m1.embed.weight, m2.embed.weight)
    assert not torch.equal(m1.embed.weight, m3.embed.weight)
    for name, fan_in in (("embed", 97), ("inproj", 500), ("outproj", 48), ("unembed", 500)):
        w = getattr(m1, name).weight.detach()
        assert float(w.std()) == pytest.approx(fan_in**-0.5, rel=0.05)
        assert abs(float(w.mean())) < 0.05 * fan_in**-0.5 * 10


def test_ticket_masks_keep_the_global_largest_magnitudes():
    w = {"a": torch.tensor([[5.0, -1.0], [0.5, 3.0]]), "b": torch.tensor([[-4.0, 0.1, 2.0]])}
    m = ticket_masks(w, 0.4)  # 7 weights, keep round(0.6 * 7) = 4: 5, -4, 3, 2
    assert m["a"].tolist() == [[True, False], [False, True]]
    assert m["b"].tolist() == [[True, False, True]]


def _result(points: list[tuple[int, float, float]]) -> TrainResult:
    return TrainResult(
        history=[EvalPoint(s, float(s), 0.1, 0.1, tr, 0.2, te) for s, tr, te in points]
    )


def test_member_record_finds_the_grokking_and_memorization_steps():
    res = _result([(10, 0.5, 0.0), (20, 0.995, 0.1), (30, 1.0, 0.96), (40, 1.0, 0.99)])
    r = member_record("dense", 0, res)
    assert (r["grok_step"], r["mem_step"], r["test_acc_at_mem"]) == (30, 20, 0.1)
    assert first_step(r["history"], "test_acc", 0.999) is None


def _rec(arm: str, seed: int, grok: int | None, diverged: bool = False) -> dict:
    hist = [{"step": 10, "train_acc": 1.0, "test_acc": 0.97 if grok else 0.3}]
    return {
        "arm": arm,
        "seed": seed,
        "diverged": diverged,
        "diverged_step": None,
        "grok_step": grok,
        "mem_step": 10,
        "test_acc_at_mem": 0.1,
        "final_test_acc": 0.99 if grok else 0.3,
        "history": hist,
    }


def _summary(steps: dict[str, list[int | None]], diverged=()) -> dict:
    cfg = make_config("grokking-tickets", steps=1000)
    records = [
        _rec(arm, s, g, (arm, s) in diverged) for arm, gs in steps.items() for s, g in enumerate(gs)
    ]
    return GrokkingTickets().summarize(cfg, records, chance=10.0)


def _verdicts(summary: dict) -> dict[str, str]:
    return {c["id"]: c["verdict"] for c in summary["claims"]}


def test_claims_hold_when_the_ticket_is_fast_in_every_seed():
    s = _summary(
        {
            "dense": [300, 400, 350],
            "gen_ticket": [100, 120, 110],
            "mem_ticket": [290, 500, 300],
            "norm_matched": [None, 900, 800],
        }
    )
    assert _verdicts(s) == {"a": "held", "b": "held", "c": "held"}
    b = next(c for c in s["claims"] if c["id"] == "b")
    assert b["evidence"]["other_steps"] == [1000, 900, 800]  # a non-grokking arm counts the budget
    assert b["evidence"]["censored"] == ["norm_matched seed 0 did not reach 95% (counted 1000)"]


def test_one_slow_seed_breaks_the_claim_even_when_the_mean_passes():
    s = _summary(
        {
            "dense": [300, 400, 1000],
            "gen_ticket": [100, 300, 110],  # seed 1: 300 / 400 = 0.75 > 0.7
            "mem_ticket": [1000, 1000, 1000],
            "norm_matched": [1000, 1000, 1000],
        }
    )
    a = next(c for c in s["claims"] if c["id"] == "a")
    assert a["verdict"] == "did not hold"
    assert a["evidence"]["ratio_of_means"] == pytest.approx(510 / 1700)
    assert _verdicts(s)["b"] == "held"


def test_exact_threshold_holds_and_above_does_not():
    ok = _summary(
        {
            "dense": [100, 100],
            "gen_ticket": [70, 70],
            "mem_ticket": [69, 69],
            "norm_matched": [100, 100],
        }
    )
    assert _verdicts(ok) == {"a": "held", "b": "held", "c": "did not hold"}


def test_dense_that_does_not_grok_in_a_seed_leaves_every_claim_untested():
    s = _summary(
        {
            "dense": [300, None],
            "gen_ticket": [10, 10],
            "mem_ticket": [900, 900],
            "norm_matched": [900, 900],
        }
    )
    assert set(_verdicts(s).values()) == {"not tested"}
    assert "seed(s) 1" in s["claims"][0]["detail"]


def test_a_diverged_member_leaves_its_claims_untested():
    s = _summary(
        {
            "dense": [300, 300],
            "gen_ticket": [10, 10],
            "mem_ticket": [900, 900],
            "norm_matched": [900, 900],
        },
        diverged={("mem_ticket", 1)},
    )
    assert _verdicts(s) == {"a": "held", "b": "held", "c": "not tested"}


def test_search_records_every_config_and_picks_the_cheapest_passing():
    records = search_config(
        [SearchShape(7, 0.5, 8, 8)],
        [(1e-2, 1.0)],
        seeds=2,
        steps=20,
        eval_every=10,
        log=lambda _: None,
    )
    assert len(records) == 1 and records[0]["n_train"] == 24
    assert records[0]["passed"] is False  # 20 steps: nothing groks
    assert pick(records) is None
    fake = [
        dict(records[0], passed=True, gflop_per_step=g, grok_steps=s)
        for g, s in ((2.0, [1]), (1.0, [9]), (1.0, [5]))
    ]
    assert pick(fake)["grok_steps"] == [5]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("grok")
    cfg = make_config("grokking-tickets", smoke=True)
    path, summary = run_recipe("grokking-tickets", cfg, out=root / "run")
    return cfg, path, summary


def test_smoke_run_outputs_masks_and_replay(smoke):
    cfg, path, summary = smoke
    assert {p.name for p in path.iterdir()} >= {"summary.json", "report.md", "accuracy_vs_step.png"}
    assert [r["arm"] for r in summary["rows"]] == [
        "dense",
        "gen_ticket",
        "mem_ticket",
        "norm_matched",
    ]
    assert summary["rows"][0]["replay_exact"] is True  # the snapshot pass retraces the first
    masks = load_tensors(path / "units" / "dense.safetensors")
    total = sum(v.numel() for k, v in masks.items() if k.startswith("gen.0."))
    kept = sum(int(v.sum()) for k, v in masks.items() if k.startswith("gen.0."))
    assert kept == round(0.6 * total)
    for c in summary["claims"]:  # 60 steps at p = 11: dense does not grok
        assert c["verdict"] == "not tested" and "did not grok" in c["detail"]


def test_smoke_run_is_deterministic_and_resumes(smoke, tmp_path):
    cfg, path, summary = smoke
    again, s2 = run_recipe("grokking-tickets", cfg, out=tmp_path / "again")
    assert json.loads((again / "summary.json").read_text()) == json.loads(
        (path / "summary.json").read_text()
    )
    before = {p.name: p.stat().st_mtime_ns for p in (again / "units").iterdir()}
    run_recipe("grokking-tickets", cfg, out=tmp_path / "again")
    assert before == {p.name: p.stat().st_mtime_ns for p in (again / "units").iterdir()}


@pytest.mark.parametrize("arch", ["mlp", "authors"])
def test_broken_run_holds_no_claim(tmp_path, arch):
    cfg = make_config("grokking-tickets", smoke=True, broken=True, arch=arch)
    _, summary = run_recipe("grokking-tickets", cfg, out=tmp_path / "b")
    assert "held" not in {c["verdict"] for c in summary["claims"]}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mlp", "authors"])
def test_population_and_loop_engines_agree(tmp_path, arch):
    """Smoke size, both engines: the same grokking/memorization steps and accuracies."""
    runs = {}
    for engine in ("population", "loop"):
        cfg = make_config("grokking-tickets", smoke=True, arch=arch, engine=engine, seeds=1)
        runs[engine] = run_recipe("grokking-tickets", cfg, out=tmp_path / engine)[1]
    for a, b in zip(runs["population"]["rows"], runs["loop"]["rows"], strict=True):
        assert a["steps_to_95"] == b["steps_to_95"] and a["mem_steps"] == b["mem_steps"]
        assert a["final_test_acc_mean"] == pytest.approx(b["final_test_acc_mean"], abs=0.02)


def test_eval_every_longer_than_the_run_is_refused_before_writing(tmp_path):
    from weightlab.errors import ConfigError

    cfg = make_config("grokking-tickets", smoke=True, eval_every=1000)
    with pytest.raises(ConfigError, match="--eval-every"):
        run_recipe("grokking-tickets", cfg, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
