"""guidance recipe [#81]: one paired seed end to end (tiny) and the claim logic."""

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.probes.guidance import Guidance, GuidanceConfig


def _summary(un, gu, acc=None, diverged=()):
    pairs = [
        {"seed": i, "unguided": a, "guided": b} for i, (a, b) in enumerate(zip(un, gu, strict=True))
    ]
    m = sum(un) / len(un) if acc is None else acc
    return {
        "arms": {"unguided": {"test_acc": {"mean": m, "std": 1.0}}},
        "pairs": pairs,
        "seeds": len(pairs),
        "chance_pct": 10.0,
        "diverged_members": list(diverged),
    }


def test_claim_logic():
    un = [96.0, 95.0, 96.5, 96.0, 95.5]
    (c,) = Guidance.check_claims(_summary(un, [u + 0.5 for u in un]))
    assert c.held is True and c.evidence["wins"] == 5
    gu = [u + 0.5 for u in un[:3]] + [un[3] - 0.1, un[4] - 0.1]
    (c,) = Guidance.check_claims(_summary(un, gu))
    assert c.held is False and c.evidence["wins"] == 3 and c.evidence["needed_wins"] == 4
    (c,) = Guidance.check_claims(_summary(un, [u + 0.5 for u in un], acc=15.0))
    assert c.held is None and "did not learn" in c.detail
    (c,) = Guidance.check_claims(_summary(un, un, diverged=["guided seed 2"]))
    assert c.held is None


def test_one_seed_trains_both_arms_from_one_init():
    r = Guidance()
    cfg = GuidanceConfig(seeds=1, n_train=60, hidden=16, epochs=2, batch_size=20)
    from weightlab.data.task import Split, TaskData

    data = r.load_data(cfg)
    task = TaskData("digits", Split(data.train.x[:60], data.train.y[:60]), data.val, data.test, 10)
    recs = r._seed(cfg, task, 0)
    assert [x["arm"] for x in recs] == ["unguided", "guided"]
    for x in recs:
        assert not x["diverged"] and len(x["cka"]) == 3
        assert all(0 <= c <= 1 for c in x["cka"])
    assert recs[0]["test_acc"] != recs[1]["test_acc"] or recs[0]["cka"] != recs[1]["cka"]


def test_config_checks():
    r = Guidance()
    with pytest.raises(ConfigError, match="--batch-size"):
        GuidanceConfig(batch_size=2)
    with pytest.raises(ConfigError, match="exceeds --n-train"):
        r.validate(GuidanceConfig(n_train=40, batch_size=50), {"train": 1077})
    with pytest.raises(ConfigError, match="exceeds the 1077"):
        r.validate(GuidanceConfig(n_train=5000), {"train": 1077})
