"""Recipe grokking-stages (methods row [#27]): stage times from curves, claims, config."""

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.dynamics.grokking_stages import (
    LAZY_TOP_RATIO,
    WD0_SLOWDOWN,
    GrokkingStages,
    GrokkingStagesConfig,
    arm_table,
    parse_fractions,
)
from weightlab.recipes.runner import make_config

BUDGET, EVERY, CHANCE = 3000, 50, 2.0


def member(arm, seed, fraction, t_mem, t_feat, t_gen, test_at_mem=0.0, top=0.10, conc_mem=0.14):
    """Hand-made curves: train accuracy 1 from t_mem, test accuracy 0.97 from t_gen (else
    test_at_mem), median concentration 0.13 at start, conc_mem until t_feat then 0.5;
    relative change of the hidden layer 0.01, of the top layer ``top``."""
    acc_steps = list(range(EVERY, BUDGET + 1, EVERY))
    probe_steps = [0, *acc_steps]

    def reached(t, s):
        return t is not None and s >= t

    return {
        "arm": arm,
        "seed": seed,
        "fraction": fraction,
        "diverged": False,
        "acc_steps": acc_steps,
        "train_acc": [1.0 if reached(t_mem, s) else 0.6 for s in acc_steps],
        "test_acc": [0.97 if reached(t_gen, s) else test_at_mem for s in acc_steps],
        "probe_steps": probe_steps,
        "conc": [
            0.5 if reached(t_feat, s) else (0.13 if s == 0 else conc_mem) for s in probe_steps
        ],
        "peak_share": [0.5] * len(probe_steps),
        "rel_hidden": [0.0 if s == 0 else 0.01 for s in probe_steps],
        "rel_top": [0.0 if s == 0 else top for s in probe_steps],
    }


def records(overrides=None):
    """Every arm, 3 seeds, shaped so that all claims hold; ``overrides[(arm, seed)]``
    replaces keyword arguments of :func:`member`."""
    plan = {
        "base": (0.4, 50, 550, 1150),
        "wd0": (0.4, 50, None, None),
        "frac0.3": (0.3, 50, 900, None),
        "frac0.5": (0.5, 100, 400, 650),
        "low_lr": (0.4, 150, 1200, 2400),
    }
    out = []
    for arm, (f, tm, tf, tg) in plan.items():
        for s in range(3):
            kw = {"t_mem": tm, "t_feat": tf, "t_gen": tg}
            kw.update((overrides or {}).get((arm, s), {}))
            out.append(member(arm, s, f, **kw))
    return out


def summarize(recs):
    cfg = GrokkingStagesConfig()
    return GrokkingStages().summarize(cfg, recs, CHANCE)


def claims(recs):
    return {c["id"]: c for c in summarize(recs)["claims"]}


def test_arms_follow_the_issue():
    arms = arm_table(GrokkingStagesConfig())
    assert arms == [
        ("base", 0.4, 1e-2, 1.0),
        ("wd0", 0.4, 1e-2, 0.0),
        ("frac0.3", 0.3, 1e-2, 1.0),
        ("frac0.5", 0.5, 1e-2, 1.0),
        ("low_lr", 0.4, 3e-3, 1.0),
    ]
    cfg = GrokkingStagesConfig()
    assert (cfg.p, cfg.hidden, cfg.steps, cfg.eval_every, cfg.beta2) == (59, 256, 3000, 50, 0.98)


def test_all_claims_hold_on_grokking_curves_and_stage_times_are_read_off():
    s = summarize(records())
    base = next(r for r in s["rows"] if r["arm"] == "base")
    assert base["t_mem"] == [50] * 3 and base["t_feat"] == [550] * 3 and base["t_gen"] == [1150] * 3
    wd0 = next(r for r in s["rows"] if r["arm"] == "wd0")
    assert wd0["t_gen"] == [None] * 3 and wd0["t_gen_censored"] == 3
    assert wd0["t_gen_mean"] == BUDGET  # censored counted as the budget
    assert "train accuracy >= 0.99" in s["rule"]
    c = {x["id"]: x for x in s["claims"]}
    assert [c[k]["verdict"] for k in "abc"] == ["held"] * 3
    a = c["a"]["evidence"]["seeds"][0]
    assert a["ratio"] == pytest.approx(10.0) and a["conc"] == pytest.approx(0.14)
    assert "lr 0.003" in c["c"]["detail"]  # learning rate: reported
    assert c["c"]["evidence"]["fractions_held"] and c["c"]["evidence"]["wd0_held"]


def test_claim_a_fails_on_each_of_its_three_conditions():
    assert claims(records({("base", 1): {"test_at_mem": 0.08}}))["a"]["held"] is False  # 8 > 7
    assert claims(records({("base", 0): {"conc_mem": 0.2}}))["a"]["held"] is False  # > 1.5x
    low = (LAZY_TOP_RATIO - 0.1) * 0.01
    res = claims(records({("base", 2): {"top": low}}))["a"]
    assert res["held"] is False and "fails in seed 2" in res["detail"]


def test_claim_b_needs_strict_order_in_every_seed():
    res = claims(records({("base", 1): {"t_feat": 50}}))["b"]
    assert res["held"] is False and "not ordered" in res["detail"]


def test_claim_c_weight_decay_and_fraction_rules():
    # wd 0 groks, but only 1.5x later than base in one seed: fails
    late = int(1150 * (WD0_SLOWDOWN - 0.5))
    res = claims(records({("wd0", 0): {"t_feat": 600, "t_gen": late}}))["c"]
    assert res["held"] is False and not res["evidence"]["wd0_held"]
    # 2x exactly is enough
    res = claims(records({("wd0", s): {"t_gen": 2300} for s in range(3)}))["c"]
    assert res["held"] is True
    # the larger fraction censored in one seed: the fall is not shown
    res = claims(records({("frac0.5", 2): {"t_gen": None}}))["c"]
    assert res["held"] is False and not res["evidence"]["fractions_held"]
    # 0.3 groks faster than 0.4: no fall
    res = claims(records({("frac0.3", s): {"t_gen": 700} for s in range(3)}))["c"]
    assert res["held"] is False


def test_precondition_base_groks_in_every_seed_and_no_divergence():
    c = claims(records({("base", 2): {"t_gen": None}}))
    assert all(c[k]["held"] is None for k in "abc")
    assert "did not grok" in c["a"]["detail"] and "seed(s) 2" in c["a"]["detail"]
    recs = records()
    recs[3]["diverged"] = True  # wd0 seed 0: only (c) reads it
    c = claims(recs)
    assert c["a"]["held"] is True and c["b"]["held"] is True
    assert c["c"]["held"] is None and "wd0 seed 0" in c["c"]["detail"]


def test_tables_and_figure_render():
    s = summarize(records({("base", 0): {"t_mem": None, "t_gen": None}}))
    tables = GrokkingStages().tables(s)
    assert len(tables) == 3 and any(">3000" in cell for row in tables[2][2] for cell in row)
    (fig,) = GrokkingStages().figures(summarize(records()))
    assert fig.png[:4] == b"\x89PNG"


def test_bad_config_is_one_line():
    for bad, match in (
        ("0.5,0.4", "increase strictly"),
        ("0.3,0.5", "must contain the base"),
        ("0.3,x", "comma-separated"),
        ("0,0.4", r"in \(0, 1\)"),
    ):
        with pytest.raises(ConfigError, match=match) as e:
            GrokkingStagesConfig(fractions=bad)
        assert "\n" not in str(e.value)
    assert parse_fractions("0.4", 0.4) == [0.4]
    with pytest.raises(ConfigError, match="multiple of --eval-every"):
        GrokkingStages().validate(GrokkingStagesConfig(steps=120, eval_every=50), {})
    with pytest.raises(ConfigError, match="one-hot Z_p"):
        GrokkingStages().validate(GrokkingStagesConfig(data="x.npz"), {})
    with pytest.raises(ConfigError, match="--p"):
        GrokkingStagesConfig(p=2)


def test_population_and_loop_engines_record_the_same_curves(tmp_path, one_thread):
    from weightlab.runs.rundir import RunDir

    out = {}
    for engine in ("population", "loop"):
        cfg = make_config(
            "grokking-stages",
            smoke=True,
            seeds=1,
            steps=20,
            eval_every=10,
            hidden=8,
            fractions="0.4",
            engine=engine,
        )
        recipe = GrokkingStages()
        rd = RunDir(tmp_path / engine, "grokking-stages", cfg).open()
        out[engine] = recipe.run(cfg, rd)
    pop, loop = ({r["arm"]: r for r in out[e]["rows"]} for e in ("population", "loop"))
    assert set(pop) == {"base", "wd0", "low_lr"}
    for arm in pop:
        for key in ("train_acc_curve", "test_acc_curve", "conc_curve", "rel_top_curve"):
            assert pop[arm][key] == pytest.approx(loop[arm][key], abs=1e-4), (arm, key)


@pytest.mark.slow
def test_two_workers_give_the_same_summary_as_one(tmp_path):
    from weightlab.recipes.runner import run_recipe

    got = []
    for workers in (1, 2):
        cfg = make_config(
            "grokking-stages",
            smoke=True,
            seeds=1,
            steps=20,
            eval_every=10,
            hidden=8,
            workers=workers,
        )
        run, _ = run_recipe("grokking-stages", cfg, out=tmp_path / f"w{workers}")
        got.append((run / "summary.json").read_bytes())
    assert got[0] == got[1]
