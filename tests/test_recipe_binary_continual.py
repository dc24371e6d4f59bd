"""Recipe ``binary-continual``: data, vectorized arms, the curve comparison and the claim."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.quant.binary import FieldPrior, MetaplasticCallback
from weightlab.recipes.quant.binary_continual import (
    MARGIN_PTS,
    BinaryContinual,
    BinaryContinualConfig,
    FieldArms,
    SignArms,
    arms_nll,
    as_task,
    curve_gap,
    draw,
    teachers,
)
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.seeding import generator
from weightlab.train import OptimConfig, TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_teacher_two_flips_exactly_the_fraction_and_data_are_deterministic():
    cfg = BinaryContinualConfig()
    w1, w2 = teachers(cfg, 3, "x")
    assert int((w1 != w2).sum()) == 100 and set(w1.tolist()) == {-1.0, 1.0}
    again = teachers(cfg, 3, "x")
    assert torch.equal(w1, again[0]) and torch.equal(w2, again[1])
    a, b = draw(w1, 50, "x", 1), draw(w1, 50, "x", 1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, (a.x @ w1 > 0).long())


def test_curve_gap_by_hand():
    mf = [(70.0, 90.0), (80.0, 80.0), (90.0, 70.0)]
    meta = [(75.0, 83.0), (85.0, 73.0)]  # the mean-field line minus 2 on [75, 85]
    c = curve_gap(mf, meta)
    assert (c["lo"], c["hi"], c["width"]) == (75.0, 85.0, 10.0)
    assert c["gap"] == pytest.approx(2.0)
    # unsorted points are sorted by task-2 accuracy first
    assert curve_gap(mf[::-1], meta[::-1])["gap"] == pytest.approx(2.0)
    apart = curve_gap([(60.0, 90.0), (65.0, 85.0)], [(70.0, 80.0), (75.0, 75.0)])
    assert apart["width"] < 0 and math.isnan(apart["gap"])


def _rows(mf_pts, meta_pts, before=90.0):
    rows = []
    for learner, pts in (("meanfield", mf_pts), ("meta", meta_pts)):
        for i, (t2, t1) in enumerate(pts):
            rows.append(
                {
                    "learner": learner,
                    "value": float(i + 1),
                    "acc1_before_mean": before,
                    "acc1_mean": t1,
                    "acc2_mean": t2,
                    "excluded": [],
                }
            )
    return rows


def test_claim_verdicts():
    mf = [(70.0, 90.0), (80.0, 80.0), (90.0, 70.0)]
    above = [(75.0, 83.0), (85.0, 73.0)]
    (c,) = BinaryContinual.check_claims(_rows(mf, above), 50.0, [])
    assert c.held is True and c.evidence["mean_gap_pts"] == pytest.approx(2.0)
    close = [(75.0, 84.5), (85.0, 74.5)]  # 0.5 pt below the mean-field line
    (c,) = BinaryContinual.check_claims(_rows(mf, close), 50.0, [])
    assert c.held is False and c.evidence["mean_gap_pts"] == pytest.approx(0.5)
    assert 0.5 < MARGIN_PTS
    narrow = [(89.0, 60.0), (90.5, 60.0)]  # shares [89, 90]: 1 pt
    (c,) = BinaryContinual.check_claims(_rows(mf, narrow), 50.0, [])
    assert c.held is None and "less than 2" in c.detail
    (c,) = BinaryContinual.check_claims(_rows(mf, above, before=55.0), 50.0, [])
    assert c.held is None and "did not learn" in c.detail


def test_vectorized_arms_train_exactly_like_separate_models():
    """One (arms, N) model in the loop gives each arm its own training (summed losses,
    elementwise Adam): same weights as training each arm alone."""
    cfg = BinaryContinualConfig(n=40, p_train=100)
    w1, w2 = teachers(cfg, 0, "t")
    t1, t2 = as_task(draw(w1, 100, "a")), as_task(draw(w2, 100, "b"))
    tc = TrainConfig(3, 20, 15, OptimConfig("adam", lr=0.05), arms_nll)

    base = FieldArms(40, 1)
    train(base, t1, tc, 0)
    betas = [0.1, 10.0]

    def second(k, beta):
        model = FieldArms(40, k)
        with torch.no_grad():
            model.layer.theta.copy_(base.layer.theta.expand_as(model.layer.theta))
        prior = FieldPrior(model)
        loss = prior.loss(model, arms_nll, beta, 100)
        train(model, t2, replace(tc, loss=loss), 1)
        return model.layer.theta.detach()

    both = second(2, torch.tensor(betas))
    for i, b in enumerate(betas):
        assert torch.allclose(both[i], second(1, torch.tensor([b]))[0], atol=1e-6)

    ms = [0.0, 4.0]

    def meta(rows):
        net = SignArms(40, len(rows), 0.01, generator(5))
        keep = net.layer.weight.detach()[rows].clone()
        with torch.no_grad():
            net.layer.weight.copy_(keep)
        m = torch.tensor([ms[r] for r in rows])[:, None]
        train(net, t1, tc, 0, callbacks=[MetaplasticCallback(net, m)])
        return net.layer.weight.detach()

    ref = SignArms(40, 2, 0.01, generator(5)).layer.weight.detach()
    assert not torch.equal(ref[0], ref[1])
    joint = meta([0, 1])

    def alone(r):
        net = SignArms(40, 1, 0.01, generator(0))
        with torch.no_grad():
            net.layer.weight.copy_(ref[r : r + 1])
        m = torch.tensor([[ms[r]]])
        train(net, t1, tc, 0, callbacks=[MetaplasticCallback(net, m)])
        return net.layer.weight.detach()[0]

    for r in (0, 1):
        assert torch.allclose(joint[r], alone(r), atol=1e-6)


def test_bad_options_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="--betas"):
        BinaryContinualConfig(betas="0.1,-1")
    with pytest.raises(ConfigError, match="--metas"):
        BinaryContinualConfig(metas="1")
    with pytest.raises(ConfigError, match="--data"):
        run_recipe("binary-continual", make_config("binary-continual", data="xor"), tmp_path / "a")
    with pytest.raises(ConfigError, match="--batch-size"):
        cfg = make_config("binary-continual", smoke=True, batch_size=500)
        run_recipe("binary-continual", cfg, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_one_seed_records_every_arm():
    cfg = make_config("binary-continual", smoke=True, epochs=3)
    recipe = BinaryContinual()
    metrics, tensors = recipe.compute_seed(cfg, 0)
    assert tensors == {} and metrics["seed"] == 0
    arms = [(m["learner"], m["value"]) for m in metrics["members"]]
    assert len(arms) == 5 + 5 + 1 and ("sgd", 0.0) in arms
    mf = [m for m in metrics["members"] if m["learner"] == "meanfield"]
    assert len({m["acc1_before"] for m in mf}) == 1  # task 1 is shared by the beta arms
    summary = recipe.summarize(metrics["members"])
    assert summary["members"] == 11 and len(summary["rows"]) == 11
    assert summary["claims"][0]["verdict"] in ("held", "did not hold", "not tested")
